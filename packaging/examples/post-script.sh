#!/bin/sh
# Sample post-script: resume the application after the snapshot. quiesce runs
# it whenever the pre-check passed, even after a failed pre-script or freeze,
# so it must be safe to run when the pre-script did nothing.
set -eu
echo "post-script: operation ${QUIESCE_OPERATION_ID:-?}: application resumed"
