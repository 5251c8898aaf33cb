#!/bin/bash
# The whole path as one chain of Slurm jobs, each starting only when the one before it succeeded
# (sbatch --dependency=afterok):
#
#   prepare.sbatch  ->  sweep.sbatch (an array, one task per grid point)  ->  select.sbatch
#   (select the best run, score it on the test split)  ->  serve.sbatch (optional: SERVE=1)
#
# plus a report job that runs only when training failed (--dependency=afternotok): the jobs after
# a failed step are cancelled by Slurm (--kill-on-invalid-dep=yes) and the report lists which
# runs failed and why. Run it on a login node, from anywhere:
#
#   slurm/pipeline.sh                                        # the demo graph, the default grid
#   WORK=/scratch/$USER/cit EDGES=/shared/raw/cites.tsv PARTS=8 RANKS=4 \
#     LRS="0.001 0.0005" HIDDENS="128 256" SERVE=1 slurm/pipeline.sh
#
# It checks the settings before submitting anything (a bad one ends it with status 2 and a
# message naming it), prints each job's id, and writes them to WORK/pipeline-jobs. Running it
# again skips what is already done and verifies: the parts (checksums), each grid point whose
# run finished with an intact best checkpoint, and the selection and test score while the chosen
# checkpoint is unchanged. So after a failure, fix the cause and run it again.
#
# Settings are environment variables, shared with the job scripts (see each for more):
#   SHARDSAGE    the binary, reachable from every node        (shardsage on PATH)
#   WORK         shared directory for data, runs, logs        ($PWD/shardsage-work)
#   EDGES        raw edge list(s) to ingest; empty: generate NODES papers (20000) with SEED
#   PARTS        parts to split the graph into                (4)
#   RANKS        MPI ranks per training run; PARTS must be a multiple of it   (2)
#   NODES_PER_RUN  nodes per training run; RANKS must be a multiple of it     (1)
#   LRS HIDDENS FANOUT_SETS   the grid (space-separated; fan-outs comma-separated per set)
#   EPOCHS STEPS_PER_EPOCH BATCH_SIZE EVAL_EVERY DEVICE THREADS CONFIG EXTRA_ARGS  for training
#   MAX_PARALLEL grid points trained at once (0: all)         (0)
#   METRIC       validation metric to select by               (mrr)
#   SERVE        1: serve the chosen model afterwards (PORT, SERVE_TIME)        (0)
#   SBATCH_ARGS  options for every sbatch call (partition, account, qos), space-separated
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# --- settings -------------------------------------------------------------------------------
: "${SHARDSAGE:=shardsage}"
: "${WORK:=$PWD/shardsage-work}"
: "${DATA:=$WORK/parts}"
: "${RUNS:=$WORK/sweep}"
: "${LOGS:=$WORK/logs}"
: "${PARTS:=4}"
: "${RANKS:=2}"
: "${NODES_PER_RUN:=1}"
: "${EDGES:=}"
: "${NODES:=20000}"
: "${LRS:=0.001 0.0005}"
: "${HIDDENS:=128 256}"
: "${FANOUT_SETS:=15,10,5}"
: "${EPOCHS=10}"
: "${STEPS_PER_EPOCH=}"
: "${BATCH_SIZE=512}"
: "${EVAL_EVERY=1}"
: "${CONFIG:=}"
: "${MAX_PARALLEL:=0}"
: "${METRIC:=mrr}"
: "${SERVE:=0}"
: "${PORT:=8080}"
: "${SERVE_TIME:=04:00:00}"
: "${SBATCH_ARGS:=}"
# ----------------------------------------------------------------------------------------------
# The job scripts read the same variables.
export SHARDSAGE WORK DATA RUNS PARTS EDGES NODES LRS HIDDENS FANOUT_SETS EPOCHS STEPS_PER_EPOCH \
  BATCH_SIZE EVAL_EVERY CONFIG METRIC PORT

say() { echo "pipeline: $*"; }

# --- check the settings before submitting anything ------------------------------------------
problems=()
problem() { problems+=("$1"); }
positive_int() { [[ $2 =~ ^[1-9][0-9]*$ ]] || problem "$1 must be a positive integer, not '$2'"; }

command -v sbatch >/dev/null || problem "sbatch is not on PATH (run this on a Slurm login node)"
if ! shardsage_path=$(command -v "$SHARDSAGE"); then
  problem "SHARDSAGE: '$SHARDSAGE' is not an executable on PATH or a path to one"
elif ! "$shardsage_path" --version >/dev/null 2>&1; then
  problem "SHARDSAGE: '$shardsage_path --version' fails"
else
  SHARDSAGE=$shardsage_path
fi
positive_int PARTS "$PARTS"
positive_int RANKS "$RANKS"
positive_int NODES_PER_RUN "$NODES_PER_RUN"
[[ $MAX_PARALLEL =~ ^[0-9]+$ ]] || problem "MAX_PARALLEL must be 0 or a positive integer, not '$MAX_PARALLEL'"
[ -n "$EPOCHS" ] && positive_int EPOCHS "$EPOCHS"
[ -n "$STEPS_PER_EPOCH" ] && positive_int STEPS_PER_EPOCH "$STEPS_PER_EPOCH"
[ -n "$BATCH_SIZE" ] && positive_int BATCH_SIZE "$BATCH_SIZE"
[ -n "$EVAL_EVERY" ] && { [[ $EVAL_EVERY =~ ^[0-9]+$ ]] || problem "EVAL_EVERY must be 0 or a positive integer, not '$EVAL_EVERY'"; }
if [[ $RANKS =~ ^[1-9][0-9]*$ && $NODES_PER_RUN =~ ^[1-9][0-9]*$ ]] && ((RANKS % NODES_PER_RUN != 0)); then
  problem "RANKS ($RANKS) must be a multiple of NODES_PER_RUN ($NODES_PER_RUN): the same ranks on every node"
fi
read -r -a lrs <<<"$LRS"
read -r -a hiddens <<<"$HIDDENS"
read -r -a fanout_sets <<<"$FANOUT_SETS"
[ ${#lrs[@]} -gt 0 ] || problem "LRS is empty"
[ ${#hiddens[@]} -gt 0 ] || problem "HIDDENS is empty"
[ ${#fanout_sets[@]} -gt 0 ] || problem "FANOUT_SETS is empty"
for lr in "${lrs[@]}"; do
  [[ $lr =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] && [[ ! $lr =~ ^[0.]+([eE].*)?$ ]] ||
    problem "LRS: '$lr' is not a positive number"
done
for h in "${hiddens[@]}"; do positive_int "HIDDENS (each)" "$h"; done
for f in "${fanout_sets[@]}"; do
  [[ $f =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || problem "FANOUT_SETS: '$f' is not a comma-separated list of positive integers (one per layer)"
done
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || problem "CONFIG: no file '$CONFIG'"
if [ -n "$EDGES" ]; then
  for f in $EDGES; do [ -f "$f" ] || problem "EDGES: no file '$f'"; done
else
  positive_int NODES "$NODES"
fi
[[ $SERVE =~ ^[01]$ ]] || problem "SERVE must be 0 or 1, not '$SERVE'"
[[ $PORT =~ ^[1-9][0-9]*$ ]] && ((PORT <= 65535)) || problem "PORT must be 1-65535, not '$PORT'"
[ -n "$METRIC" ] || problem "METRIC is empty"
mkdir -p "$WORK" "$LOGS" 2>/dev/null || problem "WORK: cannot create '$WORK' and '$LOGS'"

# Finished parts are verified (manifest and part checksums); their part count is what counts.
data_ready=0
if [ ${#problems[@]} -eq 0 ] && [ -f "$DATA/manifest.json" ]; then
  if ! inspect=$("$SHARDSAGE" inspect "$DATA" 2>&1); then
    problem "DATA: $DATA exists but does not verify (delete it to prepare again): $(tail -n 3 <<<"$inspect")"
  else
    data_ready=1
    parts=$(sed -n 's/^ *"num_parts": *\([0-9]*\).*/\1/p' "$DATA/manifest.json" | head -n 1)
    [ "$parts" = "$PARTS" ] || say "$DATA already holds $parts parts (PARTS=$PARTS ignored)"
    PARTS=$parts
  fi
fi
if [[ $PARTS =~ ^[1-9][0-9]*$ && $RANKS =~ ^[1-9][0-9]*$ ]] && ((PARTS % RANKS != 0)); then
  problem "PARTS ($PARTS) must be a multiple of RANKS ($RANKS): each rank reads whole parts"
fi

if [ ${#problems[@]} -gt 0 ]; then
  for p in "${problems[@]}"; do echo "pipeline: bad configuration: $p" >&2; done
  echo "pipeline: nothing submitted" >&2
  exit 2
fi

# shellcheck disable=SC2206  # SBATCH_ARGS is split on spaces on purpose
common=(--parsable --kill-on-invalid-dep=yes $SBATCH_ARGS)
# `sbatch --parsable` prints "jobid" or "jobid;cluster".
submit() {
  local out
  out=$(sbatch "${common[@]}" "$@") || {
    echo "pipeline: sbatch $* failed" >&2
    exit 1
  }
  echo "${out%%;*}"
}
# --dependency=afterok:<id> when <id> is set, nothing when the step was skipped.
after() { if [ -n "$1" ]; then echo "--dependency=afterok:$1"; fi; }

# --- 1. prepare ------------------------------------------------------------------------------
prepare_job=""
if [ "$data_ready" = 1 ]; then
  say "prepare: skipped, $DATA is partitioned and its checksums verify"
else
  prepare_job=$(submit --output="$LOGS/%x-%j.out" "$here/prepare.sbatch")
  say "prepare: job $prepare_job ($PARTS parts into $DATA)"
fi

# --- 2. the sweep: only the grid points whose runs are not finished -------------------------
check=$(mktemp "$WORK/.pipeline-check.XXXXXX")
trap 'rm -f "$check"' EXIT
# A finished grid point: `select` ranks its run (an end record after its last step, a finite
# METRIC) and names a best checkpoint that `inspect` verifies (sha256).
finished() {
  "$SHARDSAGE" select "$1" --metric "$METRIC" --write-best "$check" >/dev/null 2>&1 &&
    "$SHARDSAGE" inspect "$(cat "$check")" >/dev/null 2>&1
}
pending=()
total=0
while read -r task run_dir; do
  total=$((total + 1))
  if [ "$data_ready" = 1 ] && finished "$run_dir"; then
    say "sweep: task $task skipped, $run_dir finished"
  else
    pending+=("$task")
  fi
done < <(RUNS=$RUNS bash "$here/sweep.sbatch" --list)
sweep_job=""
if [ ${#pending[@]} -gt 0 ]; then
  array=$(IFS=,; echo "${pending[*]}")
  [ "$MAX_PARALLEL" -gt 0 ] && array+="%$MAX_PARALLEL"
  # shellcheck disable=SC2046  # after prints one word or none
  sweep_job=$(submit $(after "$prepare_job") --array="$array" \
    --nodes="$NODES_PER_RUN" --ntasks-per-node=$((RANKS / NODES_PER_RUN)) --ntasks="$RANKS" \
    --output="$LOGS/%x-%A_%a.out" "$here/sweep.sbatch")
  say "sweep: job $sweep_job, array tasks $array of $total grid points, $RANKS ranks each"
else
  say "sweep: skipped, all $total runs in $RUNS finished"
fi

# --- 3. select + test score --------------------------------------------------------------------
select_job=""
evaluated=$WORK/evaluated-checkpoint
best_now=""
if [ -z "$prepare_job$sweep_job" ]; then
  shopt -s nullglob
  runs=("$RUNS"/*/)
  shopt -u nullglob
  if [ ${#runs[@]} -gt 0 ] &&
    "$SHARDSAGE" select "${runs[@]%/}" --metric "$METRIC" --write-best "$check" >/dev/null 2>&1; then
    best_now=$(cat "$check")
  fi
fi
if [ -n "$best_now" ] && [ -s "$evaluated" ] && [ "$(cat "$evaluated")" = "$best_now" ] &&
  [ -s "$WORK/test-metrics.json" ] && [ -s "$WORK/best-checkpoint" ]; then
  say "select: skipped, $best_now is still the best and its test metrics are in $WORK/test-metrics.json"
else
  # shellcheck disable=SC2046
  select_job=$(submit $(after "$sweep_job") --output="$LOGS/%x-%j.out" "$here/select.sbatch")
  say "select: job $select_job (best run by valid $METRIC, then its test metrics)"
fi

# --- 4. serve (optional) --------------------------------------------------------------------
serve_job=""
if [ "$SERVE" = 1 ]; then
  previous=$(cat "$WORK/serve-job" 2>/dev/null || true)
  if [ -z "$select_job" ] && [ -n "$previous" ] && [ -n "$(squeue -h -o %i -j "$previous" 2>/dev/null)" ]; then
    say "serve: skipped, job $previous already serves the chosen model"
  else
    # shellcheck disable=SC2046
    serve_job=$(submit $(after "$select_job") --time="$SERVE_TIME" --output="$LOGS/%x-%j.out" \
      "$here/serve.sbatch")
    echo "$serve_job" >"$WORK/serve-job"
    say "serve: job $serve_job (port $PORT; its host:port goes to $WORK/serve-endpoint)"
  fi
fi

# --- on failure: a report when a training task fails (afternotok) ---------------------------
report_job=""
if [ -n "$sweep_job" ]; then
  report_job=$(submit --dependency=afternotok:"$sweep_job" --job-name=shardsage-failed \
    --ntasks=1 --time=00:10:00 --output="$LOGS/%x-%j.out" <<EOF
#!/bin/bash
echo "pipeline: training (job $sweep_job) failed; the steps after it were cancelled by Slurm."
echo "pipeline: the runs, failed and unfinished ones with the reason:"
"$SHARDSAGE" select "$RUNS"/*/ --metric "$METRIC" || true
echo "pipeline: errors in the tasks' logs ($LOGS/shardsage-sweep-${sweep_job}_<task>.out):"
grep -H -m 1 -E 'fatal:|^Error:' "$LOGS"/shardsage-sweep-${sweep_job}_*.out || echo "  (none logged)"
EOF
  )
  say "on failure: job $report_job reports if training fails (afternotok:$sweep_job)"
fi

jobs_line="prepare=${prepare_job:-skipped} sweep=${sweep_job:-skipped} select=${select_job:-skipped}"
[ "$SERVE" = 1 ] && jobs_line+=" serve=${serve_job:-skipped}"
[ -n "$report_job" ] && jobs_line+=" on-failure=$report_job"
echo "$jobs_line" >"$WORK/pipeline-jobs"
say "jobs: $jobs_line"
