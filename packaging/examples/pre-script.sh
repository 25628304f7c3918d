#!/bin/sh
# Sample pre-script: quiesce the application before the freeze.
# Runs as root, sandboxed, with QUIESCE_PHASE=pre, QUIESCE_OPERATION_ID,
# QUIESCE_ATTEMPT and QUIESCE_DEADLINE_SECONDS in its environment. $0 is this
# file's real path, so sibling files can be found next to it.
set -eu
echo "pre-script: operation ${QUIESCE_OPERATION_ID:-?}, attempt ${QUIESCE_ATTEMPT:-?}, ${QUIESCE_DEADLINE_SECONDS:-?} s left"
# A real pre-script flushes and pauses the application here, e.g.
#   psql -c 'CHECKPOINT'        (PostgreSQL)
# and exits non-zero if it could not.
sync
echo "pre-script: application quiesced"
