"""Start the page of `facegan serve` on this machine, offline."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import FaceganError

__all__ = ["ServeConfig", "serve", "require_gradio"]

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    attributes: Path | None = None  # an `attributes train` checkpoint (a network or an ensemble)
    sr: Path | None = None  # an `sr train` checkpoint
    gan: Path | None = None  # a `gan train` checkpoint
    demo_dir: Path = Path("runs/demo")  # where `facegan demo` left its models, used when none is given
    host: str = "127.0.0.1"  # loopback only; another interface only when asked for by name
    port: int = 7860
    max_upload_mb: float = 20.0


def require_gradio():
    """The gradio module, with analytics off and nothing fetched from outside; an error says how
    to install it when it is missing."""
    # Before the import: Gradio reads these once. No usage statistics, no version check, no hub.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError as exc:
        raise FaceganError("facegan serve needs Gradio: pip install 'facegan[app]'") from exc
    return gradio


def serve(config: ServeConfig, block: bool = True):
    """Load the models, build the page and serve it; returns the app when `block` is False."""
    require_gradio()
    for noisy in ("httpx", "uvicorn.access"):  # a line per request would bury the page's address
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transfer.app.ui import build_app
    from transfer.app.work import load_served_models

    if config.max_upload_mb <= 0:
        raise FaceganError(f"--max-upload-mb must be positive, not {config.max_upload_mb}")
    models = load_served_models(config.attributes, config.sr, config.gan, config.demo_dir)
    max_bytes = int(config.max_upload_mb * 1e6)
    app = build_app(models, max_bytes)
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this machine on port %d can use the page", config.host, config.port)
    try:
        app.launch(server_name=config.host, server_port=config.port, share=False, max_file_size=max_bytes,
                   prevent_thread_lock=True, show_error=False, quiet=True, ssr_mode=False, pwa=False,
                   mcp_server=False, enable_monitoring=False, inbrowser=False)
    except OSError as exc:  # the port is taken, or the interface does not exist
        raise FaceganError(f"cannot serve on {config.host}:{config.port}: {exc}") from exc
    print(f"facegan serve: {app.local_url} (Ctrl-C stops it)", flush=True)
    for line in models.describe():
        print(f"  {line}", flush=True)
    if block:
        app.block_thread()
    return app
