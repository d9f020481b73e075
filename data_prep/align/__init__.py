"""The MTCNN-based face aligner: detect 5 landmarks, fit a similarity transform to a
template (Umeyama), warp (kornia).

- `templates`: the thesis and ArcFace 5-point templates, user templates from files;
- `similarity`: least-squares similarity fits (numpy and batched torch);
- `warp`: batched affine warps of any-size images to the output size;
- `mtcnn`: facenet-pytorch's MTCNN with size handling and batching;
- `aligner`: `AlignConfig`, `FaceAligner`, `AlignResult`;
- `folder`: `align_folder`, the resumable folder/dataset run behind `facegan align`.
"""
from data_prep.align.aligner import AlignConfig, AlignConfigError, AlignResult, FaceAligner
from data_prep.align.folder import align_folder, read_manifest
from data_prep.align.similarity import umeyama, umeyama_torch
from data_prep.align.templates import Template, get_template

__all__ = [
    "AlignConfig",
    "AlignConfigError",
    "AlignResult",
    "FaceAligner",
    "Template",
    "align_folder",
    "get_template",
    "read_manifest",
    "umeyama",
    "umeyama_torch",
]
