"""Images in, aligned tensors and labelled datasets out.

- `data_prep.images`: robust image opening that says why a file cannot be used;
- `data_prep.datasets`: readers for CelebA, LFW/LFWA, UTKFace, MORPH II, ChaLearn, Adience and
  a generic folder + CSV, all yielding `SampleRecord`s described by a `LabelSchema`;
- `data_prep.align`: the MTCNN-based aligner (detector, templates, similarity fit, warp);
- `data_prep.synthetic`: the built-in procedural face dataset with two domains;
- `data_prep.cache`: memory-mapped shards of aligned uint8 faces plus labels.
"""
