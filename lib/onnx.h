/*
 * onnx.h - ONNX model import into the graph IR (graph.h).
 *
 * Parses the protobuf with code generated at build time from Debian's
 * onnx.proto, copies the weights into the graph's own 64-byte aligned arena,
 * and rewrites as it goes: BatchNormalization folds into the Conv before it,
 * Relu/Clip fold into their producer, a residual Add folds into a Conv as a
 * sum, MatMul+Add becomes one dense node, Flatten/Reshape-to-2-D become a
 * flatten, Identity/Dropout vanish.
 *
 * Supported ops: Conv, BatchNormalization, Relu, Clip, MaxPool, AveragePool,
 * GlobalAveragePool, Add, Flatten, Reshape (to 2-D), Gemm, MatMul, Constant,
 * Identity, Dropout. Anything else - an op, an attribute or an attribute
 * value we do not implement - fails with a message naming the node.
 */
#ifndef SI_ONNX_H
#define SI_ONNX_H

#include <stddef.h>

#include "err.h"
#include "graph.h"

/* Imports a model from memory. Returns a finished graph (si_graph_finish
 * done) owned by the caller, or NULL with err set. */
si_graph_t *si_onnx_parse(const void *buf, size_t len, si_err_t *err);

/* Reads and imports an ONNX file. */
si_graph_t *si_onnx_load(const char *path, si_err_t *err);

#endif
