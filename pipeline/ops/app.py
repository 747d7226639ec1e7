"""Try any registered model in a browser: `python -m pipeline.ops.app` (http://127.0.0.1:7860).

One page over the MLflow model registry: choose a registered model and an alias (champion,
challenger) or a version and see its test metrics, data fingerprint and tags; upload an image
of any size, or pick one from the project's test split, and see input | output (| target);
put champion and challenger side by side on the same input. The output is what the
registered pyfunc returns, the same pixels as `pix2pix predict` with that version's ONNX file.
What each version receives is recorded (`pix2pix.monitor`, in `--input-log`, default
monitoring/inputs.jsonl in the project) and the page shows its drift against the version's
training inputs (`/api/drift`).

The registry is the project's (its sqlite `mlflow.db`) or `MLFLOW_TRACKING_URI`'s. Binds
127.0.0.1 unless told otherwise. FastAPI and uvicorn are already part of the stack (MLflow's
and Prefect's servers); Gradio would add a dozen packages (huggingface-hub among them) and a
web app the tests could not drive by plain element ids.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image

from pix2pix.errors import Pix2PixError
from pix2pix.images import Pair, open_halves, open_image, to_channels
from pix2pix.monitor import LOG_ENV

from ..config import load_config
from ..data.manifest import held_out_split, is_unpaired, read_manifest, split_domains, to_pairs
from ..paths import MANIFEST, RAW, params_path
from ..tracking.registry import CHAMPION
from ..tracking.run import connect, project_root, tracking_uri

PAGE = Path(__file__).with_name("app.html")
# Uploads over one tile (pix2pix.tiling, ~1 MP) are translated in blended tiles, in bounded
# memory; 25 MP (a 5000 x 5000 scan) takes about a minute on a 2-core CPU.
DEFAULT_MAX_MEGAPIXELS = 25.0
DEFAULT_MAX_UPLOAD_MB = 64.0  # request bodies over this are refused before they are read
INPUT_LOG = Path("monitoring") / "inputs.jsonl"  # in the project, unless $P2P_INPUT_LOG says otherwise


class UploadError(Pix2PixError, ValueError):
    """An upload that cannot be translated; the message says why and what to do."""


def read_upload(data: bytes, max_pixels: int) -> Image.Image:
    """The uploaded bytes as an upright RGB image, or an UploadError with a clear reason."""
    if not data:
        raise UploadError("the file is empty (0 bytes); choose an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size  # from the header: nothing is decoded yet
            if w * h > max_pixels:
                raise UploadError(
                    f"{w}x{h} is {w * h / 1e6:.1f} megapixels, more than this page translates "
                    f"({max_pixels / 1e6:.0f} MP); downscale it first"
                )
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(
            "refused: the image declares more pixels than it is safe to decode (a decompression bomb?)"
        ) from None
    except UploadError:
        raise
    except Exception:  # noqa: BLE001 - Pillow raises many types for bad bytes
        raise UploadError("not a readable image (PNG, JPEG, WebP, BMP, TIFF); choose an image file") from None
    return to_channels(img, 3)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it is known to be over `max_bytes`: from its
    Content-Length before reading anything, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UploadTooLarge(int(declared), max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise UploadTooLarge(size, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


class UploadTooLarge(UploadError):
    def __init__(self, size: int, limit: int):  # size: declared, or read so far when it streams
        super().__init__(
            f"the upload is at least {size / 1e6:.0f} MB, more than this page accepts ({limit / 1e6:.0f} MB); "
            "send a smaller file or start the page with a larger --max-upload-mb"
        )


def data_uri(image: Image.Image | np.ndarray) -> str:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class Registry:
    """The registered models, their versions and aliases, and loaded pyfunc models (cached)."""

    def __init__(self, root: Path, input_log: Path | None = None):
        self.input_log = input_log
        self.mlflow = connect(root)
        self.client = self.mlflow.MlflowClient()
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def models(self) -> list[dict]:
        out = []
        for rm in self.client.search_registered_models():
            versions = sorted(
                (int(v.version) for v in self.client.search_model_versions(f"name='{rm.name}'")), reverse=True
            )
            aliases = {alias: str(version) for alias, version in (rm.aliases or {}).items()}
            out.append({"name": rm.name, "versions": [str(v) for v in versions], "aliases": aliases})
        return sorted(out, key=lambda m: m["name"])

    def version(self, name: str, ref: str) -> Any:
        """A ModelVersion from an alias (champion, challenger) or a version number."""
        from mlflow.exceptions import MlflowException

        try:
            if ref.isdigit():
                return self.client.get_model_version(name, ref)
            return self.client.get_model_version_by_alias(name, ref)
        except MlflowException:
            raise UploadError(f"model {name} has no version or alias {ref!r}; pick one from the list") from None

    def describe(self, name: str, ref: str) -> dict:
        v = self.version(name, ref)
        aliases = list(v.aliases or [])
        tags = dict(v.tags or {})
        metrics = {k.removeprefix("test_"): float(val) for k, val in tags.items() if k.startswith("test_")}
        return {
            "name": name,
            "version": str(v.version),
            "aliases": aliases,
            "metrics": metrics,
            "data_fingerprint": tags.get("data_fingerprint"),
            "tags": tags,
            "run_id": v.run_id,
        }

    def model(self, name: str, version: str):
        key = (name, version)
        with self._lock:
            if key not in self._models:
                model = self.mlflow.pyfunc.load_model(f"models:/{name}/{version}")
                monitor = getattr(model.unwrap_python_model(), "monitor", None)
                if monitor is not None and self.input_log and monitor.log is None:
                    monitor.attach(self.input_log)
                self._models[key] = model
            return self._models[key]

    def drift(self, name: str, ref: str) -> dict:
        """The drift report of what this version received (its last inputs, this page's and any
        other process's sharing the log) against its training inputs."""
        v = self.version(name, ref)
        monitor = getattr(self.model(name, str(v.version)).unwrap_python_model(), "monitor", None)
        if monitor is None:
            return {"drift": False, "tested": False, "count": 0, "version": str(v.version),
                    "reason": "this version was registered before inputs were recorded; re-export it"}  # fmt: skip
        return {**monitor.report(), "version": str(v.version)}


class TestSplit:
    """The project's held-out pairs (data/pairs/manifest.csv), as (input, target) images; for an
    unpaired dataset, the held-out images of the input domain (no target)."""

    def __init__(self, root: Path):
        self.root = root
        self.items: dict[str, Pair | Path] = {}
        try:
            self.direction = load_config(root / params_path()).data.direction
        except Pix2PixError:
            self.direction = "AtoB"
        manifest = root / MANIFEST
        if manifest.is_file():
            table = read_manifest(manifest)
            split = held_out_split(table)
            if is_unpaired(table):
                a, b = split_domains(table, split, root / RAW)
                for path in a if self.direction == "AtoB" else b:
                    self.items[f"{path.parent.name}-{path.stem}"] = path
                return
            rows = table[table["split"] == split]
            for pair_id, pair in zip(rows["id"], to_pairs(rows, root / RAW), strict=True):
                self.items[str(pair_id)] = pair

    def pair(self, pair_id: str) -> tuple[Image.Image, Image.Image | None]:
        if pair_id not in self.items:
            raise UploadError(f"no test image {pair_id!r} in {self.root / MANIFEST}; pick one from the list")
        item = self.items[pair_id]
        if isinstance(item, Path):  # unpaired: nothing to compare with
            return to_channels(open_image(item), 3), None
        a, b = (to_channels(im, 3) for im in open_halves(item))
        return (a, b) if self.direction == "AtoB" else (b, a)


def create_app(
    root: Path,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    input_log: Path | None = None,
) -> FastAPI:
    registry = Registry(root, input_log or root / INPUT_LOG)
    tests = TestSplit(root)
    max_pixels = int(max_megapixels * 1e6)
    max_bytes = int(max_upload_mb * 1e6)
    app = FastAPI(title="pix2pix models", docs_url=None, redoc_url=None)

    @app.exception_handler(Pix2PixError)
    async def user_error(request, exc):  # shown on the page; the server keeps serving
        return JSONResponse({"error": str(exc)}, status_code=413 if isinstance(exc, UploadTooLarge) else 400)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.get("/api/models")
    def models() -> list[dict]:
        return registry.models()

    @app.get("/api/version")
    def version(model: str, ref: str) -> dict:
        return registry.describe(model, ref)

    @app.get("/api/drift")
    def drift(model: str, ref: str) -> dict:
        return registry.drift(model, ref)

    @app.get("/api/test-images")
    def test_images() -> list[str]:
        return sorted(tests.items)

    @app.post("/api/translate")
    async def translate(request: Request, model: str, refs: str = CHAMPION, test_id: str | None = None) -> dict:
        """The body is the image file (any format Pillow reads), unless `test_id` names a test pair."""
        if test_id:
            source, target = tests.pair(test_id)
        else:
            source, target = read_upload(await read_body(request, max_bytes), max_pixels), None
        array = np.asarray(source)
        outputs = {}
        for ref in [r for r in refs.split(",") if r]:
            v = registry.version(model, ref)
            out = registry.model(model, str(v.version)).predict(array[None])[0]
            outputs[ref] = {"version": str(v.version), "image": data_uri(out)}
        return {
            "input": data_uri(source),
            "outputs": outputs,
            "target": data_uri(target) if target is not None else None,
            "size": list(source.size),
        }

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ops.app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--project", type=Path, default=Path("."), help="project folder: its mlflow.db and test split")
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=DEFAULT_MAX_MEGAPIXELS,
        help=f"largest upload translated, in tiles when over ~1 MP (default: {DEFAULT_MAX_MEGAPIXELS:g})",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"request bodies over this are refused before they are read (default: {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    parser.add_argument(
        "--input-log",
        type=Path,
        help=f"where the drift statistics of what each model receives are appended "
        f"(default: ${LOG_ENV}, else {INPUT_LOG} in the project)",
    )
    args = parser.parse_args(argv)
    import uvicorn

    root = project_root(args.project)
    print(f"pix2pix models from {tracking_uri(root)} on http://{args.host}:{args.port}", file=sys.stderr)
    app = create_app(root, args.max_megapixels, args.max_upload_mb, args.input_log)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
