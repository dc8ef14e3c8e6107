"""TensorFlow Datasets of the project, read without TensorFlow.

`ceeh_math.py` is one `GeneratorBasedBuilder` with a config per vendored benchmark and the
DeepScaleR sample, built offline from the JSONL files in `data/`; `prepare.py` builds them into
a data dir; `tfds_source.py` reads any prepared dataset by random access (`tfds.data_source`,
array_record files) for `ceeh_jax.data`'s `tfds:` sources. Nothing here is imported unless a
`tfds:` source is used, so `import ceeh_jax` does not pay for tensorflow_datasets.
"""
