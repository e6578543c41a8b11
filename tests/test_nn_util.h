#pragma once
// Transitional: the shared test helpers are tests/test_util.h (CHECK, CHECK_NEAR, tu_*). This
// name stays only so tests written on other branches before the rename still build; delete it
// once nothing includes it.
#include "test_util.h"
