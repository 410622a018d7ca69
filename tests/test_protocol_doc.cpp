// docs/PROTOCOL.md cannot drift from the codec: every message's field table in the document
// (a table after a `<!-- fields: NAME -->` line) must list exactly the fields of the codec's table
// (common/tables.hpp), with the same required/optional choice, wire type and nil-ness.
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "errand/codec.hpp"

namespace {

struct DocField {
    std::string name;
    std::string type;  // without " or nil"
    bool nullable = false;
    bool required = false;
};
using DocTables = std::map<std::string, std::vector<DocField>>;

std::string trim(std::string s) {
    auto b = s.find_first_not_of(" \t");
    auto e = s.find_last_not_of(" \t");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// The cells of a Markdown table row "| a | b | c |".
std::vector<std::string> cells(const std::string& line) {
    std::vector<std::string> out;
    std::string cur;
    for (std::size_t i = 1; i < line.size(); ++i) {
        if (line[i] == '|') {
            out.push_back(trim(cur));
            cur.clear();
        } else {
            cur += line[i];
        }
    }
    return out;
}

// Every `<!-- fields: NAME -->` table of `doc`: columns key | type | default | meaning, where
// default "required" marks a required key.
DocTables parse(const std::string& doc) {
    DocTables out;
    std::istringstream in(doc);
    std::string line;
    const std::string marker = "<!-- fields: ";
    while (std::getline(in, line)) {
        if (line.rfind(marker, 0) != 0) continue;
        auto name = line.substr(marker.size(), line.find(" -->") - marker.size());
        INFO("table '" << name << "'");
        REQUIRE_MESSAGE(out.count(name) == 0, "two tables for '" << name << "'");
        auto& fields = out[name];
        std::string header, separator;
        std::getline(in, header);
        std::getline(in, separator);
        const bool columns_ok =
            cells(header) == std::vector<std::string>{"key", "type", "default", "meaning"};
        REQUIRE_MESSAGE(columns_ok, "the table of '" << name
                                                     << "' must have columns key | type | "
                                                        "default | meaning, got: "
                                                     << header);
        while (std::getline(in, line) && line.rfind("|", 0) == 0) {
            auto c = cells(line);
            REQUIRE_MESSAGE(c.size() == 4, "row of '" << name << "': " << line);
            REQUIRE_MESSAGE((c[0].size() > 2 && c[0].front() == '`' && c[0].back() == '`'),
                            "keys are in backquotes: " << line);
            DocField f;
            f.name = c[0].substr(1, c[0].size() - 2);
            f.type = c[1];
            if (auto nil = f.type.find(" or nil"); nil != std::string::npos) {
                f.nullable = true;
                f.type.erase(nil);
            }
            f.required = c[2] == "required";
            fields.push_back(f);
        }
    }
    return out;
}

// What differs between the codec's tables and the document's, one line each (empty: nothing).
std::vector<std::string> differences(const std::vector<errand::MessageTable>& codec,
                                     const DocTables& doc) {
    std::vector<std::string> out;
    std::set<std::string> known;
    for (const auto& t : codec) {
        std::string name(t.name);
        known.insert(name);
        auto it = doc.find(name);
        if (it == doc.end()) {
            out.push_back("message '" + name + "': no field table in docs/PROTOCOL.md");
            continue;
        }
        std::map<std::string, const DocField*> listed;
        for (const auto& f : it->second)
            listed[f.name] = &f;
        for (const auto& f : t.fields) {
            std::string field(f.name);
            auto d = listed.find(field);
            if (d == listed.end()) {
                out.push_back("message '" + name + "': field '" + field +
                              "' is in the codec but not in the document");
                continue;
            }
            if (d->second->required != f.required)
                out.push_back("message '" + name + "': field '" + field + "' is " +
                              (f.required ? "required" : "optional") + " in the codec but " +
                              (d->second->required ? "required" : "optional") + " in the document");
            if (d->second->type != f.type)
                out.push_back("message '" + name + "': field '" + field + "' is " +
                              std::string(f.type) + " in the codec but " + d->second->type +
                              " in the document");
            if (d->second->nullable != f.nullable)
                out.push_back("message '" + name + "': field '" + field + "' is " +
                              (f.nullable ? "" : "not ") + "written as nil when absent, but " +
                              "the document says " + (d->second->nullable ? "" : "not ") +
                              "\"or nil\"");
            listed.erase(d);
        }
        for (const auto& [field, f] : listed)
            out.push_back("message '" + name + "': field '" + field +
                          "' is in the document but not in the codec");
    }
    for (const auto& [name, fields] : doc)
        if (!known.count(name))
            out.push_back("docs/PROTOCOL.md has a field table for '" + name +
                          "', a message the codec does not have");
    return out;
}

}  // namespace

TEST_CASE("docs/PROTOCOL.md lists exactly the codec's fields of every message") {
    const char* path = std::getenv("ERRAND_PROTOCOL_DOC");
    REQUIRE_MESSAGE(path != nullptr, "ERRAND_PROTOCOL_DOC is not set (tests/meson.build sets it)");
    std::ifstream in(path);
    REQUIRE_MESSAGE(in.good(), "cannot read " << path);
    std::stringstream doc;
    doc << in.rdbuf();
    auto tables = parse(doc.str());
    CHECK(tables.size() == errand::message_tables().size());
    for (const auto& line : differences(errand::message_tables(), tables))
        FAIL_CHECK(line);
}

TEST_CASE("the comparison names the message and the field that differ") {
    const std::vector<errand::MessageTable> codec = {
        {"ACK", {{"id", true, "uint", false}, {"attempt", true, "uint", false}}}};
    auto diff = [&](const std::string& doc) { return differences(codec, parse(doc)); };
    const std::string head =
        "<!-- fields: ACK -->\n| key | type | default | meaning |\n|---|---|---|---|\n";
    CHECK(diff(head + "| `id` | uint | required | |\n| `attempt` | uint | required | |\n").empty());
    CHECK(diff(head + "| `id` | uint | required | |\n") ==
          std::vector<std::string>{
              "message 'ACK': field 'attempt' is in the codec but not in the document"});
    CHECK(diff(head + "| `id` | uint | required | |\n| `attempt` | uint | 0 | |\n") ==
          std::vector<std::string>{"message 'ACK': field 'attempt' is required in the codec but "
                                   "optional in the document"});
    CHECK(diff(head +
               "| `id` | uint | required | |\n| `attempt` | uint | required | |\n| `x` | str | "
               "none | |\n") ==
          std::vector<std::string>{"message 'ACK': field 'x' is in the document but not in the "
                                   "codec"});
    CHECK(diff("nothing here\n") ==
          std::vector<std::string>{"message 'ACK': no field table in docs/PROTOCOL.md"});
}
