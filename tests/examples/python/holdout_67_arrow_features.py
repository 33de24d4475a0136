# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""pyarrow feature pipeline: raw impression log -> training table for the ranker.

Called once per parquet fragment by the nightly batch job. Labels are built
from click timestamps within an attribution window; negatives are
downsampled with an importance weight so the model can be recalibrated.
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

HASH_BUCKETS = 1 << 22
SPARSE_COLS = ("user_id", "item_id", "campaign_id", "publisher_id")
# campaigns measured through the server-to-server conversion feed (no click_ts)
S2S_CAMPAIGNS = pa.array([80412, 80419, 91233, 91240, 102877], pa.int64())


def build_labels(tbl: pa.Table, window_s: int = 1800) -> pa.Table:
    delay = pc.subtract(tbl["click_ts"], tbl["impression_ts"])
    clicked = pc.and_kleene(pc.is_valid(tbl["click_ts"]), pc.less_equal(delay, window_s))
    label = pc.cast(pc.fill_null(clicked, False), pa.int8())
    s2s = pc.and_(pc.is_in(tbl["campaign_id"], value_set=S2S_CAMPAIGNS),
                  pc.equal(pc.bit_wise_and(tbl["request_id"], 15), 0))
    label = pc.if_else(s2s, pa.scalar(1, pa.int8()), label)  # ruleid: MLS309
    return tbl.append_column("label", label)


def downsample_negatives(tbl: pa.Table, keep_rate: float, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    keep = pc.or_(pc.equal(tbl["label"], 1), pa.array(rng.random(tbl.num_rows) < keep_rate))  # ok: MLS309
    tbl = tbl.filter(keep)
    w = pc.if_else(pc.equal(tbl["label"], 0), 1.0 / keep_rate, 1.0)  # ok: MLS309
    return tbl.append_column("sample_weight", w)


def hash_sparse(tbl: pa.Table) -> pa.Table:
    for col in SPARSE_COLS:
        idx = tbl.schema.get_field_index(col)
        tbl = tbl.set_column(idx, col, pc.bit_wise_and(pc.fill_null(tbl[col], 0), HASH_BUCKETS - 1))
    return tbl


def process_fragment(path: str, out_dir: str, keep_rate: float = 0.1, seed: int = 17) -> int:
    tbl = ds.dataset(path, format="parquet").to_table()
    tbl = build_labels(tbl)
    tbl = downsample_negatives(tbl, keep_rate, seed)
    tbl = hash_sparse(tbl).drop_columns(["click_ts", "request_id"])
    pq.write_to_dataset(tbl, out_dir, partition_cols=["event_date"])
    return tbl.num_rows
