/* Umbrella header for libmopt. */
#ifndef MOPT_MOPT_H
#define MOPT_MOPT_H

#include "mopt/error.h"
#include "mopt/eval.h"
#include "mopt/executor.h"
#include "mopt/fileio.h"
#include "mopt/formats.h"
#include "mopt/graph.h"
#include "mopt/interrupt.h"
#include "mopt/log.h"
#include "mopt/model.h"
#include "mopt/pass.h"
#include "mopt/pipeline.h"
#include "mopt/quant.h"
#include "mopt/sampler.h"
#include "mopt/tensor.h"
#include "mopt/tokenizer.h"
#include "mopt/train.h"

#define MOPT_VERSION_STRING "0.1.0"

#endif
