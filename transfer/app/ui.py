"""The page of `facegan serve`, in Gradio: three tabs that lay out what `transfer.app.work` computes.

Every handler turns a bad upload into a message in the page (`gr.Error`) and logs anything
unexpected with its traceback on the server, so one bad request never stops the server.
"""
from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

from data_prep.assets import ASTRONAUT_JPG
from engine.errors import FaceganError
from transfer.app import work

__all__ = ["build_app", "TITLE"]

log = logging.getLogger(__name__)
TITLE = "facegan"
TABLE_HEADERS = ["face", "task", "prediction", "confidence", "grade"]
GRADE_NOTE = ("Grades read the confidence: S >= 0.8 > A >= 0.6 > B >= 0.4 > C >= 0.2 > D. With SA-softmax heads "
              "the confidence is 1 - P(unrecognizable) (the self-assessing softmax of Yu Zhipeng's master's thesis, "
              "BUPT 2017); otherwise the largest softmax probability. Heat maps: Grad-CAM (Selvaraju et al. 2017).")


def _shown_errors(failure):
    """Wrap a handler: bad input (a FaceganError) clears the outputs, says what is wrong in the
    tab's status line and in a notice; a bug says so too, with its traceback in the server's log.
    `failure(message)` gives the outputs that say `message`."""
    import gradio as gr

    def wrap(handler):
        @functools.wraps(handler)
        def wrapped(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except FaceganError as exc:
                message = str(exc)
            except Exception as exc:  # a page must survive anything a request does; the log keeps the details
                log.exception("request failed")
                message = f"the server could not process this request ({type(exc).__name__}); its log has the details"
            gr.Warning(message)
            return failure(f"**Could not do that:** {message}")
        return wrapped
    return wrap


def _enlarged(image, min_side: int):
    """Small images repeated pixel by pixel up to `min_side`, for the eye: no interpolation
    smooths what a model made (downloads keep the true size)."""
    if image is None:
        return None
    factor = -(-min_side // min(image.shape[:2]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def _banner(models: work.ServedModels) -> str:
    lines = [f"# {TITLE}", "Face detection and alignment (MTCNN), attributes with trust grades and Grad-CAM, "
             "super-resolution and generation, from the checkpoints below. Nothing leaves this machine."]
    lines += [f"- {line}" for line in models.describe()]
    synthetic = [kind for kind, flag in models.synthetic.items() if flag]
    if synthetic:
        names = {"attributes": "attribute model", "sr": "super-resolution model", "gan": "face generator"}
        which = ", ".join(names[k] for k in synthetic)
        lines.append(f"\n> **Demo models.** The {which} {'was' if len(synthetic) == 1 else 'were'} {work.SYNTHETIC_WARNING}")
    return "\n".join(lines)


def build_app(models: work.ServedModels, max_bytes: int):
    """The Gradio Blocks of the three tabs, for `models`."""
    import gradio as gr

    downloads = Path(tempfile.mkdtemp(prefix="facegan-serve-"))
    tasks = work.task_names(models)

    def faces_page(path, task, all_faces):
        result = work.analyse_photo(models, path, task, all_faces, max_bytes)
        columns = min(len(result.faces), 6)
        return (result.annotated, _enlarged(work.grid_of(result.faces, columns), 160), result.rows,
                _enlarged(work.grid_of(result.overlays, columns), 160), result.message)

    faces_failed = _shown_errors(lambda message: (None, None, [], None, message))
    analyse = faces_failed(faces_page)
    analyse_astronaut = faces_failed(lambda task, all_faces: faces_page(str(ASTRONAUT_JPG), task, all_faces))

    @_shown_errors(lambda message: (None, None, None, None, None, message))
    def super_resolve(path, already_aligned):
        from PIL import Image

        result = work.super_resolve_photo(models, path, already_aligned, max_bytes)
        download = Path(tempfile.mkdtemp(dir=downloads)) / "super_resolved.png"
        Image.fromarray(result.super_resolved).save(download)
        shown = [_enlarged(image, 256) for image in (result.aligned, result.low_resolution, result.bicubic,
                                                      result.super_resolved)]
        return (*shown, str(download), result.message)

    @_shown_errors(lambda message: (None, message))
    def generate(seed, count):
        grid = work.generate_grid(models, int(seed), int(count))
        return _enlarged(grid, 2 * 96 if int(count) > 8 else 96), f"{int(count)} faces from seed {int(seed)}"

    @_shown_errors(lambda message: (None, message))
    def interpolate(seed_a, seed_b, steps):
        strip = work.slerp_strip(models, int(seed_a), int(seed_b), int(steps))
        return _enlarged(strip, 96), f"{int(steps)} steps from seed {int(seed_a)} to seed {int(seed_b)}"

    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(_banner(models), elem_id="banner")
        with gr.Tabs():
            with gr.Tab("Faces", id="faces"):
                if models.attributes is None:
                    gr.Markdown("No attribute model: start the server with `--attributes CKPT`.")
                else:
                    gr.Markdown(f"Upload a photo: every face MTCNN finds is boxed, its five landmarks marked, aligned "
                                f"at {models.attributes.model.input_size} px, and graded on every task of the "
                                f"**{models.head}** head. {GRADE_NOTE}")
                    with gr.Row():
                        with gr.Column():
                            photo = gr.File(label="photo (JPEG, PNG, WebP, ...)", type="filepath", elem_id="faces-upload")
                            with gr.Row():
                                task = gr.Dropdown(tasks, value=tasks[0], label="Grad-CAM of task", elem_id="cam-task")
                                all_faces = gr.Checkbox(value=True, label="all faces (else the one nearest the centre)")
                            with gr.Row():
                                run = gr.Button("Find faces", variant="primary", elem_id="faces-run")
                                astronaut = gr.Button("Use the bundled astronaut", elem_id="faces-astronaut")
                            status = gr.Markdown(elem_id="faces-status")
                        annotated = gr.Image(label="faces found", type="numpy", format="png", interactive=False,
                                             elem_id="faces-annotated")
                    with gr.Row():
                        aligned = gr.Image(label="aligned faces, in the order of the boxes", format="png",
                                           interactive=False, height=240, elem_id="faces-aligned")
                        overlays = gr.Image(label="Grad-CAM of the chosen task", format="png", interactive=False,
                                            height=240, elem_id="faces-cam")
                    table = gr.Dataframe(headers=TABLE_HEADERS, label="predictions, most trusted first",
                                         interactive=False, elem_id="faces-table")
                    outputs = [annotated, aligned, table, overlays, status]
                    run.click(analyse, [photo, task, all_faces], outputs)
                    astronaut.click(analyse_astronaut, [task, all_faces], outputs)
            with gr.Tab("Super-resolve", id="sr"):
                if models.sr is None:
                    gr.Markdown("No super-resolution model: start the server with `--sr CKPT`.")
                else:
                    sr = models.sr
                    gr.Markdown(f"Upload a face: it is aligned at {sr.output_size} px, brought down to {sr.input_size} px "
                                f"(what the model was trained to enlarge), then enlarged x{sr.scale} by bicubic "
                                "interpolation and by the model.")
                    with gr.Row():
                        with gr.Column():
                            sr_photo = gr.File(label="face photo", type="filepath", elem_id="sr-upload")
                            sr_aligned_input = gr.Checkbox(value=False, label="already aligned (use its centre square)")
                            sr_run = gr.Button("Super-resolve", variant="primary", elem_id="sr-run")
                            sr_status = gr.Markdown(elem_id="sr-status")
                        sr_reference = gr.Image(label=f"aligned, {sr.output_size} px", format="png", interactive=False, height=256)
                        sr_low = gr.Image(label=f"model input, {sr.input_size} px", format="png", interactive=False, height=256)
                    with gr.Row():
                        sr_bicubic = gr.Image(label=f"bicubic, {sr.output_size} px", format="png", interactive=False, height=256)
                        sr_output = gr.Image(label=f"super-resolved, {sr.output_size} px", format="png",
                                             interactive=False, height=256, elem_id="sr-output")
                        sr_download = gr.File(label="download the super-resolved face", interactive=False)
                    sr_run.click(super_resolve, [sr_photo, sr_aligned_input],
                                 [sr_reference, sr_low, sr_bicubic, sr_output, sr_download, sr_status])
            with gr.Tab("Generate", id="generate"):
                if models.gan is None:
                    gr.Markdown("No face generator: start the server with `--gan CKPT`.")
                else:
                    gr.Markdown("Faces from a seed (the same as `facegan gan sample --seed`), and the spherical "
                                "interpolation between the latent vectors of two seeds.")
                    with gr.Row():
                        seed = gr.Number(value=0, precision=0, label="seed")
                        count = gr.Slider(1, 64, value=16, step=1, label="faces")
                        generate_run = gr.Button("Generate", variant="primary", elem_id="gan-run")
                    grid = gr.Image(label="generated faces", format="png", interactive=False, height=440, elem_id="gan-grid")
                    with gr.Row():
                        seed_a = gr.Number(value=1, precision=0, label="from seed")
                        seed_b = gr.Number(value=2, precision=0, label="to seed")
                        steps = gr.Slider(2, 16, value=8, step=1, label="steps")
                        strip_run = gr.Button("Interpolate", elem_id="gan-slerp")
                    strip = gr.Image(label="slerp strip", format="png", interactive=False, height=160, elem_id="gan-strip")
                    gan_status = gr.Markdown(elem_id="gan-status")
                    generate_run.click(generate, [seed, count], [grid, gan_status])
                    strip_run.click(interpolate, [seed_a, seed_b, steps], [strip, gan_status])
    # One request at a time per event: the models are shared, and two CPU-bound requests at once
    # only slow each other; a second browser waits in the queue and then gets its answer.
    app.queue(default_concurrency_limit=1, max_size=64)
    return app
