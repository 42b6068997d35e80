"""Client-reported usage as the relay's token types (relay_guard_tokens_total's `type` label).

One rule, the relay's own (src/usage/counts.rs): cache writes that the TTL breakdown
(`cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`) does not cover count
as 5-minute writes, the API's default TTL. Used by scripts/sdk_e2e.py and
scripts/claude_code_e2e.py, so both clients' reports are compared with the relay the same way.
"""

TYPES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "web_search")


def counts(input_tokens=0, output_tokens=0, cache_creation=0, w5=0, w1h=0, cache_read=0,
           web_search=0):
    unbroken = max(0, cache_creation - (w5 + w1h))
    return {"input": input_tokens, "output": output_tokens, "cache_write_5m": w5 + unbroken,
            "cache_write_1h": w1h, "cache_read": cache_read, "web_search": web_search}


def n(v):
    """A usage number as the client gave it; anything else raises (a failed check, not a 0).
    None is "not reported", which the relay counts as 0 too."""
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"not a token count: {v!r}")
    return v


def from_usage(u):
    """An Anthropic `usage` object (a dict with the API's field names) as relay types."""
    cc = u.get("cache_creation") or {}
    return counts(n(u.get("input_tokens")), n(u.get("output_tokens")),
                  n(u.get("cache_creation_input_tokens")),
                  n(cc.get("ephemeral_5m_input_tokens")), n(cc.get("ephemeral_1h_input_tokens")),
                  n(u.get("cache_read_input_tokens")),
                  n((u.get("server_tool_use") or {}).get("web_search_requests")))


def from_model_usage(m):
    """One entry of Claude Code's `modelUsage` (camelCase names) as relay types."""
    return counts(n(m.get("inputTokens")), n(m.get("outputTokens")),
                  n(m.get("cacheCreationInputTokens")),
                  n(m.get("cacheCreationEphemeral5mInputTokens")),
                  n(m.get("cacheCreationEphemeral1hInputTokens")),
                  n(m.get("cacheReadInputTokens")), n(m.get("webSearchRequests")))
