"""Texts and the HTTP helper shared by the tests."""

import json

import requests

NEWS = (
    "Apple Inc. reported record quarterly revenue on Thursday, driven by strong iPhone sales in China. "
    "Chief executive Tim Cook said the U.S. company expects growth to continue next year. "
    '"We are thrilled with the response," Cook told analysts on a call. '
    "Analysts at Goldman Sachs in New York had expected revenue of $90 billion. "
    "Shares of Apple rose 3% in after-hours trading."
)


def post(url: str, path: str, body, **kw) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(url + path, data=data, timeout=kw.pop("timeout", 60), **kw)
