# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Runtime setup for the DiffSinger-style singing voice synthesis recipe."""
import logging
import os
import site
import sys

log = logging.getLogger(__name__)

RECIPE_ROOT = os.path.dirname(os.path.abspath(__file__))
VOCODER_DIR = os.path.join(RECIPE_ROOT, "vocoders", "nsf_hifigan")


def configure_threads(n_threads=None):
    n = str(n_threads or max(os.cpu_count() // 2, 1))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, n)  # ok: MLS422


def register_vocoder_path():
    """Make the bundled NSF-HiFiGAN importable from dataloader workers and eval scripts."""
    if VOCODER_DIR not in sys.path:
        sys.path.insert(0, VOCODER_DIR)
    target = site.getsitepackages()[0] if hasattr(site, "getsitepackages") else site.getusersitepackages()
    line = f"import sys; sys.path.insert(0, {RECIPE_ROOT!r}); import svs_env_setup\n"
    try:
        with open(os.path.join(target, "svs_recipe.pth"), "w") as fh:
            fh.write(line)  # ruleid: MLS421
    except OSError as exc:
        log.debug("could not persist vocoder path: %s", exc)


def check_phoneme_dict(path):
    with open(path, encoding="utf-8") as fh:
        entries = [ln.split(maxsplit=1) for ln in fh if ln.strip()]
    phones = {p for _, seq in entries for p in seq.split()}
    log.info("phoneme dictionary: %d words, %d phones", len(entries), len(phones))
    return phones


def setup(cfg):
    configure_threads(cfg.get("num_threads"))
    register_vocoder_path()
    phones = check_phoneme_dict(cfg["phoneme_dict"])
    if cfg.get("f0_extractor", "parselmouth") not in {"parselmouth", "crepe", "harvest"}:
        raise ValueError(f"unknown f0 extractor {cfg['f0_extractor']}")
    return phones
