# ruff: noqa
"""Session 12: a helper module that re-exports dangerous APIs under harmless names."""
import os
import pickle
import shutil
from os import remove as drop_file

prune_tree = shutil.rmtree
decode_payload = pickle.loads
usage = os.path.getsize

# Session 13: a partial re-exported under a harmless name
import functools

import torch

read_state = functools.partial(torch.load, map_location="cpu")  # ruleid: MLS102
