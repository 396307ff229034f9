"""The book machine: chapter discovery, the papermill runner, the ledger, full-scale provenance, the
site build, the Sphinx extension, the calibration sweep and the command line. Chapters never import
it; it imports the library (claims records, profiles), never the other way round."""
