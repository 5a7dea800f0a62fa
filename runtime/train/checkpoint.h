// Checkpoint folders of a run: output_dir/checkpoint-<step>/ holding the adapter, the optimizer
// state and trainer_state.json (step, data position, seeds). A checkpoint is written into
// checkpoint-<step>.tmp and renamed into place, so a folder named checkpoint-<step> is always
// complete; after a save only the newest save_total_limit are kept.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "csrc/data/batch.h"

namespace qtrain::train {

// Everything besides the adapter and the optimizer that a resumed run needs to continue exactly.
struct TrainerState {
  int64_t global_step = 0;   // optimizer steps done (skipped ones included)
  int64_t total_steps = 0;
  int64_t micro_step = 0;    // micro-batches done: the dropout seed of the next one derives from it
  uint64_t seed = 0;
  data::BatchPosition data_position;  // the next training batch
  int64_t nonfinite_in_a_row = 0;
  int64_t tokens_seen = 0;
  double elapsed_s = 0.0;  // training time before this checkpoint
  bool operator==(const TrainerState&) const = default;
};

std::string trainer_state_json(const TrainerState& s);
// BadInput naming `path` when a field is missing or of the wrong type.
TrainerState parse_trainer_state(const std::string& json_text, const std::string& path);
TrainerState read_trainer_state(const std::string& path);

struct CheckpointEntry {
  int64_t step = 0;
  std::string path;
};

// The complete checkpoints of output_dir (checkpoint-<digits>), oldest first.
std::vector<CheckpointEntry> list_checkpoints(const std::string& output_dir);
std::optional<CheckpointEntry> newest_checkpoint(const std::string& output_dir);

// Creates output_dir/checkpoint-<step>.tmp, lets `fill` write into it, renames it to
// checkpoint-<step> (replacing an older folder of that name), then keeps the newest `keep`
// checkpoints (keep <= 0: all). Returns the checkpoint's path.
std::string save_checkpoint(const std::string& output_dir, int64_t step,
                            const std::function<void(const std::string& dir)>& fill, int64_t keep);
void rotate_checkpoints(const std::string& output_dir, int64_t keep);

}  // namespace qtrain::train
