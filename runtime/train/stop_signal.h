// SIGINT / SIGTERM during training: the handler only records the signal; the trainer looks at it
// at each optimizer-step boundary, saves a checkpoint and stops. The tool then exits with
// 128 + signal number (130 for SIGINT, 143 for SIGTERM), the shell's convention for a process
// ended by that signal. A second signal while the checkpoint is written is ignored; the save is
// short and leaving it half done would gain nothing.
#pragma once

namespace qtrain::train {

void install_stop_handlers();
void restore_default_handlers();
// The signal received since install (0 for none).
int stop_requested();
// Sets the flag as a signal would (tests).
void request_stop(int signal_number);

}  // namespace qtrain::train
