"""Image-quality metrics for the face generators and the face super-resolution model.

- `frechet`: Fréchet distance between fitted Gaussians (FID's formula) and KID;
- `inception`: the standard FID Inception (torch-fidelity's TF port), from local weights only;
- `face_embedding`: dlib face-identity embeddings: identity similarity (SR vs HR) and FD-face;
- `fid`: `compute_fid_kid` over folders or batches with any feature extractor, protocol included;
- `feature_cache`: a fixed image set's features kept on disk, so a reference is extracted once;
- `image`: PSNR and SSIM on RGB or the Y channel, BasicSR conventions;
- `batch`: the image-batch layout rule (numpy NHWC, torch NCHW) and `to_uint8`.

dlib and torch-fidelity are imported only when the metric that needs them is built.
"""
from gan.metrics.batch import ImageBatchError, as_uint8_nchw, as_uint8_nhwc, to_uint8
from gan.metrics.face_embedding import (
    FaceEmbedder,
    FaceEmbeddingUnavailable,
    face_model_paths,
    fd_face,
    identity_similarity,
    landmark_box_from_template,
)
from gan.metrics.fid import compute_fid_kid, extract_features, extractor_protocol, fid_kid_from_features, iter_image_batches
from gan.metrics.frechet import (
    FeatureError,
    FeatureStatistics,
    KernelDistance,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    kernel_distance,
    sqrtm_psd,
    trace_sqrt_product,
)
from gan.metrics.image import psnr, rgb_to_y, ssim
from gan.metrics.inception import (
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    InceptionFeatureExtractor,
    InceptionWeightsError,
    find_inception_weights,
)

__all__ = [
    "FaceEmbedder",
    "FaceEmbeddingUnavailable",
    "FeatureError",
    "FeatureStatistics",
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "ImageBatchError",
    "InceptionFeatureExtractor",
    "InceptionWeightsError",
    "KernelDistance",
    "as_uint8_nchw",
    "as_uint8_nhwc",
    "compute_fid_kid",
    "extract_features",
    "extractor_protocol",
    "face_model_paths",
    "fd_face",
    "feature_statistics",
    "fid_kid_from_features",
    "find_inception_weights",
    "frechet_distance",
    "frechet_distance_from_features",
    "identity_similarity",
    "iter_image_batches",
    "kernel_distance",
    "landmark_box_from_template",
    "psnr",
    "rgb_to_y",
    "sqrtm_psd",
    "ssim",
    "to_uint8",
    "trace_sqrt_product",
]
