#!/usr/bin/env bash
# Starts this project's services on a cluster node. The cluster files run it as their start
# command, on every `ray up`, so it restarts what an earlier run started and never stops halfway:
#
#   start-node.sh head [RAY START ARGS...]    MLflow on 127.0.0.1:5000, then the Ray head
#   start-node.sh worker [RAY START ARGS...]  a Ray node that joins $RAY_HEAD_IP
#
# It reads ~/mri-sr.env, written by the cluster file's setup_commands: PATH, RAY_AUTH_MODE=token,
# MRI_SR_STORAGE, MLFLOW_TRACKING_URI, MRI_SR_MLFLOW_DB (a local path: SQLite on NFS corrupts) and
# MRI_SR_ARTIFACTS. Every process Ray starts, a submitted job's driver included, inherits them.
#
# What it guards against, each seen on a real `ray up`:
# - Ray runs every command as `bash -c '<command>'`, whose own command line contains whatever the
#   command looks for, so `pgrep -f "mlflow server"` always matched and MLflow never started:
#   MLflow is found by its pidfile and its health endpoint instead.
# - `ulimit -n 65536 && ray start` skipped `ray start` where the hard limit is lower (containers,
#   unprivileged accounts): the limit is raised as far as allowed and never stops the start.
# - `ray down` stops Ray but knows nothing of MLflow: a watcher stops MLflow once this node's Ray
#   (its GCS server) is gone.
set -euo pipefail

role=${1:?usage: start-node.sh head|worker [ray start args...]}
shift
# shellcheck source=/dev/null
. ~/mri-sr.env

# Ray's ports, fixed so that a firewall between the machines can list them (README, "On-premise"):
# 6379 GCS, 8076 object manager, 8077 node manager, 8078 metrics, 8079 and 52365 dashboard agent,
# 8080 runtime-env agent, 10001 Ray client, 10002-10999 workers (and on the head Ray's fixed
# Prometheus ports, 44217 autoscaler and 44227 dashboard). The dashboard and Jobs API (8265)
# and MLflow (5000) listen on the head's loopback only: users reach them through `ray dashboard`
# and `ray attach --port-forward`, and the Jobs API asks for the cluster's token.
ports=(--object-manager-port=8076 --node-manager-port=8077 --metrics-export-port=8078
       --dashboard-agent-grpc-port=8079 --dashboard-agent-listen-port=52365
       --runtime-env-agent-port=8080 --min-worker-port=10002 --max-worker-port=10999)

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# Trials at the priority of everything else on the node, not Ray's default nice 15: their torch
# threads waited on each other whenever one lost its core (hpo/ray_runtime.py, NODE_ENV).
export RAY_worker_niceness=0
# Idle data workers kept for a minute, not ended after 1 s: each keeps its volumes read and
# degraded for a trial's next round of patches (hpo/ray_runtime.py, NODE_ENV).
export RAY_idle_worker_killing_time_threshold_ms=60000

mlflow_pidfile=~/.mri-sr-mlflow.pid

stop_mlflow() {
    local pid
    pid=$(cat "$mlflow_pidfile" 2>/dev/null) || return 0
    # The pid leads its own session (setsid below): signal the whole group, server and workers.
    kill -- "-$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -9 -- "-$pid" 2>/dev/null || true
    rm -f "$mlflow_pidfile"
}

mlflow_healthy() {
    python -c 'import sys, urllib.request
try:
    sys.exit(urllib.request.urlopen("http://127.0.0.1:5000/health", timeout=2).status != 200)
except OSError:
    sys.exit(1)'
}

start_mlflow() {
    mkdir -p "$(dirname "$MRI_SR_MLFLOW_DB")"
    local log
    log="$(dirname "$MRI_SR_MLFLOW_DB")/server.log"
    # The server, and a watcher that ends it with this node's Ray, in one new session.
    setsid bash -c '
        mlflow server --backend-store-uri "sqlite:///$1" --artifacts-destination "$2" \
            --host 127.0.0.1 --port 5000 &
        server=$!
        while kill -0 "$server" 2>/dev/null && pgrep -u "$(id -u)" -x gcs_server >/dev/null; do sleep 2; done
        kill -- "-$$"
    ' mlflow-with-ray "$MRI_SR_MLFLOW_DB" "$MRI_SR_ARTIFACTS" > "$log" 2>&1 < /dev/null &
    echo $! > "$mlflow_pidfile"
    # MLflow 3 takes 10-20 s to answer on a small machine.
    for _ in $(seq 120); do
        if mlflow_healthy; then
            echo "MLflow: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (store $MRI_SR_MLFLOW_DB, artifacts $MRI_SR_ARTIFACTS)"
            return 0
        fi
        sleep 1
    done
    echo "MLflow did not answer on 127.0.0.1:5000 within 120 s; its log: $log" >&2
    tail -n 20 "$log" >&2
    return 1
}

# The cluster's token: made on the user's machine (`ray get-auth-token --generate`) and shipped to
# every node by the cluster file's file_mounts; nodes and clients without it are refused.
if [ ! -s ~/.ray/auth_token ]; then
    echo "start-node.sh: no ~/.ray/auth_token on this node: run 'ray get-auth-token --generate' where you run 'ray up', then 'ray up' again" >&2
    exit 1
fi

case "$role" in
    head)
        stop_mlflow
        ray stop
        ray start --head --port=6379 --ray-client-server-port=10001 --dashboard-host=127.0.0.1 \
            --dashboard-port=8265 "${ports[@]}" "$@"
        start_mlflow
        ;;
    worker)
        ray stop
        ray start --address="${RAY_HEAD_IP:?RAY_HEAD_IP is set by the launcher}:6379" "${ports[@]}" "$@"
        ;;
    *)
        echo "start-node.sh: unknown role '$role' (head or worker)" >&2
        exit 2
        ;;
esac
