"""Study-scale reanalysis: BIDS datasets in and out, batch runs over many sessions (local
processes or a Dask cluster), group tables and reports."""
