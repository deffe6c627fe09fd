"""Pure forward/backward pairs, one concept per file: `op_forward(...) -> (out, cache)`,
`op_backward(dout, cache) -> grads`. They never mutate their inputs."""
