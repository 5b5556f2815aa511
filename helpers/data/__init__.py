"""Training data: payment queries, step-wise, conversational and preference datasets, exports, the optional LLM teacher."""
