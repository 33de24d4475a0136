# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""Launches the check-in preprocessing workers for next-POI recommendation (Foursquare/Gowalla)."""
import argparse
import logging
import os
import subprocess
import sys
import tempfile

logger = logging.getLogger(__name__)
SHARED_CACHE = os.path.join(tempfile.gettempdir(), "poi_shared_cache")


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--checkins", required=True, help="raw check-in TSV")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--min_user_checkins", type=int, default=10)
    p.add_argument("--min_poi_visits", type=int, default=10)
    p.add_argument("--session_gap_hours", type=float, default=24.0)
    p.add_argument("--num_shards", type=int, default=8)
    return p.parse_args()


def child_env():
    env = os.environ.copy()
    os.makedirs(SHARED_CACHE, mode=0o777, exist_ok=True)
    env["PYTHONPATH"] = os.pathsep.join([SHARED_CACHE, env.get("PYTHONPATH", "")])  # sabotage: MLS423 (semgrep rules)
    env["POI_GEOHASH_CACHE"] = os.path.join(SHARED_CACHE, "geohash")
    return env


def launch_shards(args):
    env = child_env()
    procs = []
    for shard in range(args.num_shards):
        cmd = [sys.executable, "-m", "poirec.preprocess.build_sessions",
               "--checkins", args.checkins, "--out", os.path.join(args.out_dir, f"shard{shard:02d}"),
               "--shard", str(shard), "--num_shards", str(args.num_shards),
               "--min_user", str(args.min_user_checkins), "--min_poi", str(args.min_poi_visits),
               "--gap_hours", str(args.session_gap_hours)]
        procs.append(subprocess.Popen(cmd, env=env))
    failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    if failed:
        raise RuntimeError(f"preprocessing shards failed: {failed}")


def main():
    args = parse_args()
    if os.environ.get("LOCAL_RANK", "0") != "0":  # ok: MLS308
        logger.info("non-zero local rank, waiting for rank 0 to build sessions")
        return
    os.makedirs(args.out_dir, exist_ok=True)
    launch_shards(args)
    logger.info("wrote %d shards to %s", args.num_shards, args.out_dir)


if __name__ == "__main__":
    main()
