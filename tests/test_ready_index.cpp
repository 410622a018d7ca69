// Unit tests of the ready index: FIFO within a priority, priorities, argv lanes.
#include <doctest/doctest.h>

#include "ready_index.hpp"

using errand::broker::ReadyIndex;

TEST_CASE("FIFO within one queue and one priority") {
    ReadyIndex ix;
    for (errand::JobId id = 1; id <= 5; ++id)
        ix.push("q", id, 0, false);
    CHECK(ix.size("q") == 5);
    for (errand::JobId id = 1; id <= 5; ++id)
        CHECK(ix.pop("q", false) == id);
    CHECK_FALSE(ix.pop("q", false).has_value());
    CHECK(ix.size() == 0);
}

TEST_CASE("higher priority first, queues apart") {
    ReadyIndex ix;
    ix.push("q", 1, 0, false);
    ix.push("q", 2, 5, false);
    ix.push("other", 3, 9, false);
    ix.push("q", 4, 5, false);
    CHECK(ix.pop("q", false) == 2);
    CHECK(ix.pop("q", false) == 4);
    CHECK(ix.pop("q", false) == 1);
    CHECK(ix.size("other") == 1);
    CHECK(ix.pop("missing", true) == std::nullopt);
}

TEST_CASE("jobs with argv only go to workers that accept them") {
    ReadyIndex ix;
    ix.push("q", 1, 0, true);
    ix.push("q", 2, 0, false);
    ix.push("q", 3, 0, true);
    CHECK(ix.has_ready("q", false));
    CHECK(ix.pop("q", false) == 2);
    CHECK_FALSE(ix.has_ready("q", false));
    CHECK_FALSE(ix.pop("q", false).has_value());
    CHECK(ix.has_ready("q", true));
    CHECK(ix.pop("q", true) == 1);
    CHECK(ix.pop("q", true) == 3);
    CHECK(ix.size() == 0);
}

TEST_CASE("an accepting worker takes the older job across lanes") {
    ReadyIndex ix;
    ix.push("q", 10, 0, false);
    ix.push("q", 11, 0, true);
    ix.push("q", 12, 0, false);
    CHECK(ix.pop("q", true) == 10);
    CHECK(ix.pop("q", true) == 11);
    CHECK(ix.pop("q", true) == 12);
}
