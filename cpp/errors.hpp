// Error types of the fastcodec core. The Python binding maps them, in one
// place (bindings.cpp), to fastcodec.FormatError / fastcodec.ArgumentError.
#pragma once
#include <stdexcept>
#include <string>

namespace fastcodec {

// The compressed data is malformed: truncated, corrupted, inconsistent.
struct FormatError : std::runtime_error {
    explicit FormatError(const std::string& m) : std::runtime_error(m) {}
};

// A caller passed an invalid argument (shape, range, size).
struct ArgumentError : std::invalid_argument {
    explicit ArgumentError(const std::string& m) : std::invalid_argument(m) {}
};

}  // namespace fastcodec
