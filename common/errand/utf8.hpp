// UTF-8 checks for text that came from a peer: what a strict decoder accepts, and how to make any
// bytes safe to put in a str field (ERROR messages quote requests, which may be any bytes).
#pragma once

#include <string>
#include <string_view>

namespace errand {

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_utf8(std::string_view s);
// `s` with every byte that is not part of well-formed UTF-8 written as \xNN: valid UTF-8 that
// still shows what was sent.
std::string utf8_escaped(std::string_view s);

}  // namespace errand
