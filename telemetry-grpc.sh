#!/usr/bin/env bash
# shellcheck shell=bash
# Same as `source telemetry.sh --protocol=grpc`: Claude Code -> tokenbridge collector over OTLP/gRPC (127.0.0.1:14317).
#   source telemetry-grpc.sh [--host=H] [--port=P] [--unset]
if [ -n "${ZSH_VERSION:-}" ]; then
  case "${ZSH_EVAL_CONTEXT:-}" in
    *:file*)
      # shellcheck disable=SC2296
      source "$(dirname "${(%):-%x}")/telemetry.sh" --protocol=grpc "$@" ;;
    *) echo "telemetry-grpc.sh must be sourced, not executed: run  source telemetry-grpc.sh  (bash or zsh)" >&2; exit 1 ;;
  esac
elif [ -n "${BASH_VERSION:-}" ]; then
  if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "telemetry-grpc.sh must be sourced, not executed: run  source $0  (bash or zsh)" >&2
    exit 1
  fi
  # shellcheck source=telemetry.sh
  source "$(dirname "${BASH_SOURCE[0]}")/telemetry.sh" --protocol=grpc "$@"
else
  echo "telemetry-grpc.sh: needs bash or zsh; run: source telemetry-grpc.sh (from bash or zsh)" >&2
  # shellcheck disable=SC2317
  return 1 2>/dev/null || exit 1
fi
