"""The theory's only contact with run folders: ``fit_run`` (fits.json), the response of a run, and the
import of the paper authors' curves. Everything else in ``theory`` works on plain arrays."""
