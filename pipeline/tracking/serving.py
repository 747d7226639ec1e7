"""The registered model: an MLflow pyfunc that translates uint8 images of any size.

Logged as "models from code" (this file is copied into the model and run at load time, no
pickling) with the `pix2pix` package shipped beside it, so loading needs torch,
torchvision, onnxruntime and Pillow, not this repository.

Input: uint8 array N x H x W x C (or one H x W x C image); output: the same layout, uint8.

Every input's drift statistics are recorded against the training reference registered with
the version (`pix2pix.monitor`): in memory (`monitor.report()`), and appended to the file
named by $P2P_INPUT_LOG when it is set, which `pix2pix drift --log FILE` reports.
"""

from __future__ import annotations

import mlflow
import numpy as np
from PIL import Image


class Pix2PixModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from pix2pix.loading import load_runner
        from pix2pix.monitor import monitor_for

        self.runner = load_runner(context.artifacts["generator"])
        self.monitor = monitor_for(context.artifacts.get("input_reference"))

    def predict(self, context, model_input, params=None):
        from pix2pix.predict import translate

        images = np.asarray(model_input)
        single = images.ndim == 3
        batch = images[None] if single else images
        if batch.ndim != 4:
            raise ValueError(f"expected uint8 images shaped N x H x W x C or H x W x C, got shape {images.shape}")
        outputs = []
        for img in batch.astype(np.uint8, copy=False):
            self.monitor.record(img)
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            out = np.asarray(translate(self.runner, pil))
            outputs.append(out[..., None] if out.ndim == 2 else out)
        result = np.stack(outputs)
        return result[0] if single else result


mlflow.models.set_model(Pix2PixModel())
