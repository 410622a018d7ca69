// The dashboard's files (web/), embedded at build time by scripts/embed_assets.py.
#pragma once

#include <cstddef>
#include <string_view>

namespace errand::broker {

struct WebAsset {
    std::string_view path;  // URL path, e.g. "/app.js" ("/" for index.html)
    std::string_view content_type;
    std::string_view data;
};

extern const WebAsset kWebAssets[];
extern const std::size_t kWebAssetCount;

}  // namespace errand::broker
