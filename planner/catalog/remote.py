"""Fetch only `config.json` of a hub model that is not in the catalog (explicit, never in the estimator)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from ..errors import UnknownModelError

HUB_URL = "https://huggingface.co/{repo}/resolve/main/config.json"
TIMEOUT_S = 10


def fetch_config(repo: str) -> dict:
    """Download one repo's config.json.

    Raises:
        UnknownModelError: offline (or HF_HUB_OFFLINE=1), missing repo, or not JSON.
    """
    offline_hint = "download its config.json and pass --model path/to/config.json"
    if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "TRUE", "yes"):
        raise UnknownModelError(f"{repo!r} is not in the catalog and HF_HUB_OFFLINE is set: {offline_hint}")
    request = urllib.request.Request(HUB_URL.format(repo=repo), headers={"User-Agent": "vramplan"})
    token = os.environ.get("HF_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise UnknownModelError(f"{repo!r} is not in the catalog and the hub answered {exc.code} for its config.json (gated or misspelled?): {offline_hint}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise UnknownModelError(f"{repo!r} is not in the catalog and the hub cannot be reached ({exc}): {offline_hint}") from None
    except ValueError:
        raise UnknownModelError(f"the hub's config.json for {repo!r} is not valid JSON") from None
