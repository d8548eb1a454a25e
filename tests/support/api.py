"""What the API tests share: the key header a client presents, and the error shape of the
Open311-style answers (a list of {code, description})."""

import httpx


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_error(response: httpx.Response, status: int, words: str) -> None:
    """The answer is `status` with an Open311 error list, one description naming `words`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, list) and body, body
    assert all(set(e) == {"code", "description"} and e["code"] == status for e in body), body
    assert any(words in e["description"] for e in body), body
