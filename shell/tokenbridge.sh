# tokenbridge shell integration: source it from ~/.bashrc or ~/.zshrc
#
#     . /path/to/tokenbridge/shell/tokenbridge.sh
#
# Each command named in TOKENBRIDGE_WRAP (default: "claude aider") becomes a function that runs
# the real command through `tokenbridge wrap`, so usage it prints (/cost, Aider's per-reply
# lines) is recorded. The command still runs in a terminal of its own: colours, resizing,
# Ctrl-C and its exit code are unchanged. Usage a source already reads from the tool's own
# files (Claude Code transcripts, Codex rollouts) is not recorded a second time.
#
# tb_capture_pane [PANE] records usage printed in a tmux pane's scrollback (default: the
# current pane); running it again over the same scrollback adds nothing. A tmux key for it:
#
#     bind-key U run-shell 'tokenbridge capture --pane "#{pane_id}"'

if command -v tokenbridge >/dev/null 2>&1; then
  for _tb_cmd in $(printf '%s\n' "${TOKENBRIDGE_WRAP:-claude aider}"); do
    case "$_tb_cmd" in
      *[!A-Za-z0-9_.-]*) continue ;;  # only plain command names become functions
    esac
    eval "${_tb_cmd}() { tokenbridge wrap -- command ${_tb_cmd} \"\$@\"; }"
  done
  unset _tb_cmd
fi

tb_capture_pane() {
  tokenbridge capture --pane "${1:-${TMUX_PANE:?tb_capture_pane: not inside tmux; give a pane id}}"
}
