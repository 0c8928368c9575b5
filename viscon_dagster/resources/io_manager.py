"""Parquet IO manager on the storage root (local or S3), one file per asset partition.

Paths: `<root>/<asset key path>/<partition key>.parquet`. Outputs may be a pyarrow Table or a
pandas DataFrame; inputs load as a pyarrow Table, or as a DataFrame when the input is annotated
`pd.DataFrame`. No pickle anywhere: every artifact is a parquet file any tool can read. Each file is
published whole (`core.files.parquet.write_parquet`): a downstream step never reads a torn file, and a
run that fails or is killed while writing leaves the previous materialization in place.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow as pa
from upath import UPath

from viscon_dagster.core.files.parquet import read_parquet, write_parquet
from viscon_dagster.resources.storage import StorageResource


class ParquetUPathIOManager(dg.UPathIOManager):
    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj, path: UPath) -> None:
        if isinstance(obj, pd.DataFrame):
            obj = pa.Table.from_pandas(obj, preserve_index=False)
        if not isinstance(obj, pa.Table):
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                            "the parquet IO manager stores pyarrow Tables or pandas DataFrames")
        write_parquet(obj, path)

    def load_from_path(self, context: dg.InputContext, path: UPath):
        table = read_parquet(path)
        if context.dagster_type.typing_type is pd.DataFrame:
            return table.to_pandas()
        return table


class ParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet files under the storage root."""

    storage: StorageResource

    def create_io_manager(self, context) -> ParquetUPathIOManager:
        return ParquetUPathIOManager(base_path=self.storage.root_path())
