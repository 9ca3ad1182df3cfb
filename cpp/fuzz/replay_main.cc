// Plain driver for the fuzz targets, without libFuzzer: replays corpus files and directories,
// then runs a bounded number of seeded random mutations of them. Used by ctest (also under
// AddressSanitizer), so every kept regression input runs in CI on any compiler.
//   replay DIR_OR_FILE... [--mutations N]
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

static bool read_file(const std::string& path, std::vector<uint8_t>& out) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    uint8_t buf[4096];
    size_t k;
    out.clear();
    while ((k = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + k);
    std::fclose(f);
    return true;
}

static void collect(const std::string& path, std::vector<std::string>& files) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR* d = opendir(path.c_str());
        if (!d) return;
        while (dirent* e = readdir(d))
            if (e->d_name[0] != '.') collect(path + "/" + e->d_name, files);
        closedir(d);
    } else {
        files.push_back(path);
    }
}

int main(int argc, char** argv) {
    long mutations = 0;
    std::vector<std::string> files;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--mutations") && i + 1 < argc)
            mutations = std::atol(argv[++i]);
        else
            collect(argv[i], files);
    }
    std::vector<std::vector<uint8_t>> inputs;
    for (const auto& f : files) {
        std::vector<uint8_t> d;
        if (read_file(f, d)) inputs.push_back(d);
    }
    if (inputs.empty()) inputs.push_back({});
    for (const auto& d : inputs) LLVMFuzzerTestOneInput(d.data(), d.size());
    std::mt19937_64 rng(12345);
    for (long m = 0; m < mutations; ++m) {
        std::vector<uint8_t> d = inputs[rng() % inputs.size()];
        const int edits = 1 + int(rng() % 8);
        for (int e = 0; e < edits; ++e) {
            const int kind = int(rng() % 4);
            if (kind == 0 || d.empty()) {
                d.push_back(uint8_t(rng()));
            } else if (kind == 1) {
                d[rng() % d.size()] ^= uint8_t(1u << (rng() % 8));
            } else if (kind == 2) {
                d[rng() % d.size()] = uint8_t(rng());
            } else {
                d.resize(rng() % (d.size() + 1));
            }
        }
        LLVMFuzzerTestOneInput(d.data(), d.size());
    }
    std::printf("replayed %zu inputs and %ld mutations: no crash\n", inputs.size(), mutations);
    return 0;
}
