"""The gRPC API's protobuf (analyze.proto) and its generated modules, made with grpcio-tools from the
project root by the command at the top of analyze.proto; tests/test_grpc.py checks they are current."""
