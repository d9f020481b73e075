"""Dataset readers: each parses a dataset's own label files into `SampleRecord`s with a
`LabelSchema`, and returns a `FaceDataset` (a torch Dataset) with the skipped samples.

Readers: CelebA, LFW/LFW-a/LFWA, UTKFace, MORPH II, ChaLearn LAP and FotW, Adience, and a
generic folder + CSV; `load_dataset(name, root)` picks one by name. `splits` makes
identity-disjoint splits where a dataset has no official one.

Bad data, the same policy in every reader:
- `LabelFileError` (names `file:line`): a row with the wrong number of fields, a value that
  does not parse or is out of range, a repeated row, a row missing from a companion file
  (CelebA's partition/identity/landmark files must cover the attribute file) or a companion
  row for an image the main label file does not list, a saved HTML page instead of a label file;
- `SkippedSample` (kept in `dataset.skipped`, with file, line and reason): a listed image that
  is not on disk, an image on disk without a label row (CelebA), a label the dataset itself
  makes ambiguous (an LFW image in both gender lists), a UTKFace file name that does not
  parse, Adience's truncated last line;
- `DatasetNotFoundError`: a required file or folder is absent; `DatasetOptionError`: a reader
  argument cannot be used.
Nothing is ever silently relabelled or dropped.
"""

from data_prep.datasets.adience import (
    ADIENCE_AGE_BINS,
    ADIENCE_AGE_CLASSES,
    adience_age_group,
    load_adience,
    read_adience_fold,
)
from data_prep.datasets.base import FaceDataset, encode_labels, require_dir, require_file, sniff_html
from data_prep.datasets.celeba import (
    CELEBA_ATTRIBUTES,
    load_celeba,
    read_celeba_attributes,
    read_celeba_bboxes,
    read_celeba_identities,
    read_celeba_landmarks,
    read_celeba_partition,
)
from data_prep.datasets.chalearn import load_chalearn_lap, load_fotw, read_fotw_labels, read_lap_labels
from data_prep.datasets.folder_csv import infer_schema, load_folder_csv, read_schema_file
from data_prep.datasets.lfw import COLUMBIA_TO_CELEBA, load_lfw, read_columbia_attributes, read_gender_lists
from data_prep.datasets.morph import MORPH_RACES, load_morph, read_morph_labels
from data_prep.datasets.record import SPLITS, DatasetNotFoundError, LabelFileError, SampleRecord, SkippedSample
from data_prep.datasets.registry import DATASETS, UnknownDatasetError, available_datasets, get_reader, load_dataset
from data_prep.datasets.schema import LabelSchema, Task, TaskKind
from data_prep.datasets.splits import (
    SplitError,
    ensure_splits,
    identity_disjoint_split,
    resplit_by_identity,
    split_leaks,
)
from data_prep.datasets.textio import DatasetOptionError
from data_prep.datasets.utkface import UTK_RACES, deduplicate, load_utkface, parse_utkface_name, read_duplicate_groups

__all__ = [
    # contracts
    "FaceDataset", "LabelSchema", "Task", "TaskKind", "SampleRecord", "SkippedSample", "LabelFileError",
    "DatasetNotFoundError", "SPLITS", "encode_labels", "require_dir", "require_file", "sniff_html",
    # registry
    "DATASETS", "UnknownDatasetError", "available_datasets", "get_reader", "load_dataset", "DatasetOptionError",
    # readers
    "load_celeba", "load_lfw", "load_utkface", "load_morph", "load_chalearn_lap", "load_fotw", "load_adience",
    "load_folder_csv",
    # label files alone
    "CELEBA_ATTRIBUTES", "read_celeba_attributes", "read_celeba_partition", "read_celeba_identities",
    "read_celeba_landmarks", "read_celeba_bboxes", "COLUMBIA_TO_CELEBA", "read_gender_lists",
    "read_columbia_attributes", "UTK_RACES", "parse_utkface_name", "read_duplicate_groups", "deduplicate",
    "MORPH_RACES", "read_morph_labels", "read_lap_labels", "read_fotw_labels", "ADIENCE_AGE_BINS",
    "ADIENCE_AGE_CLASSES", "adience_age_group", "read_adience_fold", "infer_schema", "read_schema_file",
    # splits
    "SplitError", "identity_disjoint_split", "resplit_by_identity", "ensure_splits", "split_leaks",
]  # fmt: skip
