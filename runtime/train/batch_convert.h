// The data pipeline's micro-batch (csrc/data/batch.h: per-row segment offsets) in the form every
// model backend takes (runtime/model/batch.h: per-token segment ids). Segment k of a row (its k-th
// packed example) gets id k + 1; padding past the row's length gets 0.
#pragma once
#include "csrc/data/batch.h"
#include "runtime/model/batch.h"

namespace qtrain::train {

model::Batch to_model_batch(const data::Batch& b);

}  // namespace qtrain::train
