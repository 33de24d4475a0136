# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Presence / pseudo-absence table construction for a multi-species distribution model."""
import numpy as np
import pandas as pd

SENSITIVE_STATUS = {"CR", "EN"}


def thin_to_grid(occ: pd.DataFrame, cell_deg: float = 0.05) -> pd.DataFrame:
    """Spatial thinning: keep one record per species per grid cell to reduce sampling bias."""
    occ = occ.assign(cx=(occ["lon"] // cell_deg).astype(int), cy=(occ["lat"] // cell_deg).astype(int))
    occ = occ.drop_duplicates(subset=["species", "cx", "cy"], keep="first")  # ok: MLS309
    return occ.drop(columns=["cx", "cy"])


def sample_background(bbox, n, rng: np.random.Generator) -> pd.DataFrame:
    lon0, lat0, lon1, lat1 = bbox
    return pd.DataFrame({"lon": rng.uniform(lon0, lon1, n), "lat": rng.uniform(lat0, lat1, n)})


def build_table(occ: pd.DataFrame, redlist: pd.DataFrame, covariates, bbox,
                bg_per_species: int = 10000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    occ = thin_to_grid(occ)
    pres = occ[["species", "lon", "lat"]].assign(presence=1)
    frames = [pres]
    for sp in pres["species"].unique():
        bg = sample_background(bbox, bg_per_species, rng).assign(species=sp, presence=0)
        frames.append(bg)
    table = pd.concat(frames, ignore_index=True)

    # data licence: sensitive taxa must not expose confirmed occurrence records
    sensitive = redlist.loc[redlist["status"].isin(SENSITIVE_STATUS), "species"]
    table.loc[table["species"].isin(sensitive), "presence"] = 0  # todoruleid: family 6 (missed)

    env = covariates.sample(table["lon"].to_numpy(), table["lat"].to_numpy())
    table = pd.concat([table, pd.DataFrame(env, columns=covariates.names)], axis=1)
    table = table.dropna(subset=covariates.names).reset_index(drop=True)
    n_pres = table.groupby("species")["presence"].transform("sum")
    n_bg = table.groupby("species")["presence"].transform("count") - n_pres
    table["weight"] = np.where(table["presence"] == 1, 1.0, n_pres / n_bg.clip(lower=1))
    return table
