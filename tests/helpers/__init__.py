"""Helpers shared by the test files (tests never import each other): ``models`` (the one tiny GPT, Trainers,
checkpoints), ``data`` (toy DataModules, corpora, stage-3 sets), ``tokenizers`` (tiny BPEs), ``cli`` (configs
and in-process CLI runners). Fixtures stay in ``tests/conftest.py``."""
