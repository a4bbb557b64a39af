"""``python -m vfanalytics.cli`` runs the ``vfa`` command."""

from vfanalytics.cli import main

main()
