"""huggingface_hub / HTTP / OS exceptions raised while talking to the Hub or writing a download ->
one-line gpt2cli errors that say what to do."""

from __future__ import annotations

import errno
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gpt2cli.errors import DownloadError, GPT2CLIError, ModelNotFoundError
from gpt2cli.store.hub import ALIASES, HubRef, endpoint


@contextmanager
def hub_errors(ref: HubRef, root: Path) -> Iterator[None]:
    """Lets gpt2cli errors through and turns every other exception into one."""
    try:
        yield
    except GPT2CLIError:
        raise
    except Exception as e:  # noqa: BLE001 - no huggingface_hub / httpx / OS exception may escape
        raise _convert_error(e, ref, root) from e


_RETRY = "run the command again to resume"
_ALTERNATIVES = "pass --model PATH to a model folder, or --offline to use downloaded models only"


def _convert_error(e: Exception, ref: HubRef, root: Path) -> GPT2CLIError:
    """The gpt2cli error for an exception raised while talking to the Hub or writing the download."""
    hf = _hf_errors()
    what = ref.display
    hub_url = endpoint() or "https://huggingface.co"
    if isinstance(e, hf["GatedRepoError"]):
        return ModelNotFoundError(
            f"{ref.repo_id} is gated on the Hub; accept its terms on the Hub and set HF_TOKEN, or {_ALTERNATIVES}"
        )
    if isinstance(e, hf["RepositoryNotFoundError"]):
        return ModelNotFoundError(
            f"no model repo {ref.repo_id!r} on the Hub at {hub_url} (or it is private: set HF_TOKEN); "
            f"check the name, or use one of {', '.join(ALIASES)}"
        )
    if isinstance(e, hf["RevisionNotFoundError"]):
        return ModelNotFoundError(
            f"revision {ref.revision!r} not found in {ref.repo_id}; "
            "pass an existing branch, tag or commit to --revision"
        )
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return DownloadError(
            f"disk full while downloading {what} into {root}; free some space, or choose another folder "
            "with --weights-dir or GPT2CLI_WEIGHTS"
        )
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DownloadError(
            f"cannot write to {root} ({e.strerror}); choose another folder with --weights-dir or GPT2CLI_WEIGHTS"
        )
    local = isinstance(e, OSError) and not isinstance(e, (ConnectionError, hf["HfHubHTTPError"]))
    if local and e.errno is not None:
        # A local file-system problem repeats on every run: name it instead of advising a retry.
        where = e.filename or root
        return DownloadError(
            f"cannot write {where} ({e.strerror}); fix or remove it, or choose another weights folder with "
            "--weights-dir or GPT2CLI_WEIGHTS"
        )
    connect_errors, transport_errors = _network_errors()
    if isinstance(e, (*connect_errors, hf["OfflineModeIsEnabled"], hf["LocalEntryNotFoundError"])):
        return DownloadError(  # --offline would not help here: this model is not on disk
            f"cannot reach the Hub at {hub_url} to download {what}; check the network and HF_ENDPOINT, or run "
            "`gpt2cli download` where the Hub is reachable and pass --model PATH to the folder it prints"
        )
    if isinstance(e, hf["EntryNotFoundError"]):
        return DownloadError(f"the Hub is missing a file of {what} that it listed ({_first_line(e)}); {_RETRY}")
    if isinstance(e, hf["HfHubHTTPError"]):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", "error")
        if status in (401, 403):
            return DownloadError(
                f"the Hub refused access to {ref.repo_id} (HTTP {status}); set HF_TOKEN, or {_ALTERNATIVES}"
            )
        return DownloadError(
            f"the Hub at {hub_url} answered HTTP {status} for {what}; try again later, or {_ALTERNATIVES}"
        )
    if type(e).__name__ == "TooManyRedirects":  # httpx2, httpx and requests all call it that
        return DownloadError(  # a retry meets the same loop: say where it is instead
            f"the Hub at {hub_url} redirected without end while downloading {what} (a misconfigured "
            f"HF_ENDPOINT or proxy); check HF_ENDPOINT and the proxy settings, or {_ALTERNATIVES}"
        )
    if isinstance(e, (*transport_errors, ConnectionError)):
        return DownloadError(
            f"the connection to the Hub broke while downloading {what} ({_first_line(e)}); {_RETRY}, or {_ALTERNATIVES}"
        )
    return DownloadError(f"downloading {what} failed ({type(e).__name__}: {_first_line(e)}); {_RETRY}")


class _Never(Exception):
    """Stands in for an exception class this huggingface_hub version does not have."""


def _hf_errors() -> dict[str, type[BaseException]]:
    """huggingface_hub's exception classes by name, wherever this version keeps them."""
    import huggingface_hub.utils as utils

    try:
        import huggingface_hub.errors as errors
    except ImportError:  # before huggingface_hub 0.24
        errors = utils
    names = (
        "GatedRepoError", "RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError",
        "LocalEntryNotFoundError", "HfHubHTTPError", "OfflineModeIsEnabled",
    )  # fmt: skip
    return {n: getattr(errors, n, None) or getattr(utils, n, None) or _Never for n in names}


def _network_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(could not connect, connection broke) classes of the HTTP clients huggingface_hub has used:
    httpx2 (2.x), httpx (1.x), requests (0.x). Only the ones already imported can have raised."""
    connect: list[type[BaseException]] = []
    transport: list[type[BaseException]] = []
    for module, connect_names, transport_name in (
        ("httpx2", ("ConnectError", "ConnectTimeout"), "TransportError"),
        ("httpx", ("ConnectError", "ConnectTimeout"), "TransportError"),
        ("requests.exceptions", ("ConnectionError", "ConnectTimeout"), "RequestException"),
    ):
        mod = sys.modules.get(module)
        if mod is None:
            continue
        connect += [getattr(mod, n) for n in connect_names if hasattr(mod, n)]
        if hasattr(mod, transport_name):
            transport.append(getattr(mod, transport_name))
    return tuple(connect), tuple(transport)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
