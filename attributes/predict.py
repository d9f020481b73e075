"""Predicting attributes of raw photos (`facegan attributes predict`): MTCNN alignment, then every
task's prediction, probability, confidence and grade as JSON.

Photos are aligned exactly as the training faces were (the template and size stored in the
checkpoint), so a prediction on a holiday snapshot sees the same kind of input as training.
For each face the JSON holds, per task: the prediction, its probability, the confidence and
the grade (S..D). With SA-softmax heads the confidence is 1 - p(unrecognizable); otherwise it
is the max-softmax probability and the JSON says so. Files that cannot be read, and photos in
which no face is found, are listed with their reason instead of a prediction.
"""
from __future__ import annotations

import contextlib

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.checkpoint import atomic_write_text
from engine.errors import FaceganError

__all__ = ["predict_paths", "face_predictions", "aligned_photo_batches", "grade_of"]

log = logging.getLogger(__name__)

def grade_of(confidence: float) -> str:
    """The SA grade letter of one confidence (bounds in `attributes.sa_softmax`)."""
    from attributes.sa_softmax import grade

    return grade(float(confidence))[0]


def _collect_paths(inputs: list[Path]) -> list[Path]:
    from data_prep.images import list_images

    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths.extend(list_images(item))
        else:
            paths.append(item)  # a missing file is reported per file, not as a crash
    return paths


def _task_entries(group, decoded: dict[str, torch.Tensor], row: int, thresholds: torch.Tensor | None) -> dict[str, dict]:
    from data_prep.datasets.schema import TaskKind

    entries: dict[str, dict] = {}
    confidence_kind = "sa_softmax" if group.sa else "max_softmax"
    if group.kind is TaskKind.REGRESSION:
        task = group.tasks[0]
        entries[task.name] = {"value": round(float(decoded["value"][row]), 2)}
        return entries
    if group.kind is TaskKind.BINARY:
        for k, task in enumerate(group.tasks):
            prob = float(decoded["prob"][row, k])
            threshold = float(thresholds[k]) if thresholds is not None else 0.5
            confidence = float(decoded["confidence"][row, k]) if group.sa else float(decoded["max_softmax"][row, k])
            entries[task.name] = {
                "prediction": bool(prob >= threshold), "probability": round(prob, 4), "threshold": round(threshold, 4),
                "confidence": round(confidence, 4), "confidence_kind": confidence_kind, "grade": grade_of(confidence),
            }
        return entries
    task = group.tasks[0]
    probs = decoded["probs"][row]
    index = int(probs.argmax())
    confidence = float(decoded["confidence"][row]) if group.sa else float(decoded["max_softmax"][row])
    entries[task.name] = {
        "prediction": task.classes[index], "probability": round(float(probs[index]), 4),
        "probabilities": {c: round(float(p), 4) for c, p in zip(task.classes, probs.tolist())},
        "confidence": round(confidence, 4), "confidence_kind": confidence_kind, "grade": grade_of(confidence),
    }
    return entries


def aligned_photo_batches(inputs: list[Path], size: int, template: str, device: str = "cpu", batch_size: int = 32):
    """Align the image files in `inputs` (files or folders) in batches, as training faces were.
    Yields (uint8 faces (B, 3, S, S), [(path, alignment result)], [failure records]); a batch in
    which nothing aligned yields an empty tensor, so failures are never lost."""
    from data_prep.align.aligner import AlignConfig, FaceAligner
    from data_prep.images import ImageLoadError, load_rgb

    aligner = FaceAligner(AlignConfig(template=template, output_size=size, device=device))
    paths = _collect_paths(inputs)
    for start in range(0, len(paths), batch_size):
        failures: list[dict[str, Any]] = []
        images, kept = [], []
        for path in paths[start:start + batch_size]:
            try:
                images.append(load_rgb(path))
                kept.append(path)
            except ImageLoadError as exc:
                failures.append({"path": str(path), "status": "unreadable", "reason": exc.reason, "detail": str(exc)})
        faces, face_paths = [], []
        for path, result in zip(kept, aligner.align_batch(images) if images else []):
            if result.face is None:
                failures.append({"path": str(path), "status": "no_face", "reason": result.reason})
            else:
                faces.append(result.face)
                face_paths.append((path, result))
        batch = (torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).contiguous() if faces
                 else torch.zeros(0, 3, size, size, dtype=torch.uint8))
        yield batch, face_paths, failures


def face_predictions(loaded, faces: torch.Tensor, head: str, device: str | torch.device = "cpu",
                     bf16: bool = False) -> list[dict[str, dict]]:
    """{task: prediction, probability, confidence, grade (or value)} of each uint8 aligned face
    (B, 3, S, S) for `head`, with the run's calibrated thresholds and flip test-time augmentation,
    through the model's inference fast path (`LoadedModel.fast`)."""
    from attributes.heads import decode_group
    from attributes.inference import calibrated_thresholds, raw_outputs

    model = loaded.fast(bf16)
    if not len(faces):
        return []
    outputs = raw_outputs(model, faces.to(device), head, loaded.config.eval.flip_tta)
    rows: list[dict[str, dict]] = []
    for row in range(faces.shape[0]):
        tasks: dict[str, dict] = {}
        for group in model.groups[head]:
            decoded = decode_group(group, outputs[group.name][row:row + 1])
            tasks.update(_task_entries(group, decoded, 0, calibrated_thresholds(loaded.thresholds, head, group)))
        rows.append(tasks)
    return rows


def predict_paths(checkpoint: str | Path, inputs: list[Path], head: str | None = None, device: str = "cpu",
                  batch_size: int = 32, use_ema: bool = True, out: str | Path | None = None,
                  bf16: bool = False) -> dict[str, Any]:
    """Predictions for every image file in `inputs` (files or folders); also written to `out`
    when given: one JSON document (`.json`), or JSON lines (`.jsonl`), a record per image appended
    as its batch is done, so that a rerun resumes where a killed run stopped and torchrun can
    share the photos among processes (each appends to its own part; rank 0 merges them)."""
    from attributes.inference import load_attribute_model
    from data_prep.folder_job import JobShard, JsonLinesAppender, job_shard, merge_json_parts, read_json_lines

    loaded = load_attribute_model(checkpoint, use_ema=use_ema, device=device)
    model = loaded.model
    heads = list(model.groups)
    head = head or heads[0]
    if head not in model.groups:
        raise FaceganError(f"no head {head!r} in {checkpoint}; it has {heads}")
    entry = loaded.config.datasets.get(head)
    template = entry.template if entry is not None else "thesis"
    paths = _collect_paths(inputs)
    if not paths:
        raise FaceganError("no image files given")
    lines = Path(out) if out is not None and Path(out).suffix.lower() == ".jsonl" else None
    shard = job_shard() if lines is not None else JobShard()
    part = shard.part(lines) if lines is not None else None
    results: list[dict[str, Any]] = []
    if lines is not None:
        done = {record["path"] for record in read_json_lines(lines)}
        if shard.sharded:
            done |= {record["path"] for record in read_json_lines(part)}
        batches = [[p for p in batch if str(p) not in done] for batch in shard.batches(paths, batch_size)]
        batches = [batch for batch in batches if batch]
    else:
        batches = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
    with (JsonLinesAppender(part) if part is not None else contextlib.nullcontext()) as appender:
        for chunk in batches:
            records: list[dict[str, Any]] = []
            for batch, face_paths, failures in aligned_photo_batches(chunk, model.input_size, template, device, len(chunk)):
                records += failures
                if face_paths:
                    for (path, result), tasks in zip(face_paths, face_predictions(loaded, batch, head, device, bf16)):
                        records.append({"path": str(path), "status": result.status,
                                        "face_score": None if result.score is None else round(float(result.score), 4),
                                        "tasks": tasks})
            order_in_chunk = {str(p): i for i, p in enumerate(chunk)}
            records.sort(key=lambda r: order_in_chunk.get(r["path"], 0))
            if appender is not None:
                appender.write(records)
            results += records
    if lines is not None:
        shard.barrier()
        if shard.rank == 0 and shard.sharded:
            merge_json_parts(lines, shard, {str(p): i for i, p in enumerate(paths)}, key="path")
        shard.barrier()
        results = read_json_lines(lines) if shard.rank == 0 else results
    order = {str(p): i for i, p in enumerate(paths)}
    results.sort(key=lambda r: order.get(r["path"], 0))
    summary = {
        "checkpoint": str(checkpoint), "head": head, "step": loaded.step, "template": template,
        "input_size": model.input_size, "weights": "ema" if use_ema else "raw",
        "precision": "bfloat16" if loaded.fast(bf16).dtype is not None else "float32",
        "grades": "S >= 0.8 > A >= 0.6 > B >= 0.4 > C >= 0.2 > D",
        "counts": {s: sum(r["status"] == s for r in results) for s in ("aligned", "center_crop", "no_face", "unreadable")},
        "images": results,
    }
    if out is not None and lines is None:
        atomic_write_text(out, json.dumps(summary, indent=2) + "\n")
    return summary
