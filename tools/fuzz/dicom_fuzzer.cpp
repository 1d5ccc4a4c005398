// libFuzzer harness for BoneTriage's DICOM reader (the CDCMTK shim over DCMTK and OpenJPEG).
// Build and run with `make fuzz` (FUZZ_SECONDS=600 by default); see the README.
#include <cstdint>
#include <cstdio>
#include <string>
#include <unistd.h>
#include <vector>

#include "bt_dicom.h"

static std::string scratchPath() {
    static std::string path = "/tmp/bonetriage-fuzz-" + std::to_string(getpid()) + ".dcm";
    return path;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string path = scratchPath();
    FILE *f = fopen(path.c_str(), "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    char error[512];
    for (int metadataOnly = 1; metadataOnly >= 0; --metadataOnly) {
        bt_dicom *dicom = bt_dicom_open(path.c_str(), metadataOnly, error, sizeof error);
        if (!dicom) return 0;
        const uint16_t tags[][2] = {{0x0020, 0x000D}, {0x0008, 0x0018}, {0x0008, 0x0016}, {0x0010, 0x0010}, {0x0028, 0x0004}};
        for (auto &t : tags) (void)bt_dicom_string(dicom, t[0], t[1]);
        (void)bt_dicom_integer(dicom, 0x0028, 0x0010, 0);
        if (!metadataOnly) {
            bt_render_info info;
            bt_image *image = bt_dicom_image(dicom, 1u << 22, &info, error, sizeof error);
            if (image) {
                std::vector<uint8_t> out(size_t(info.width) * size_t(info.height) * size_t(info.channels));
                for (int frame = 0; frame < info.frames && frame < 4; ++frame) {
                    (void)bt_image_render(image, frame, out.data(), out.size(), error, sizeof error);
                }
                bt_image_close(image);
            }
        }
        bt_dicom_close(dicom);
    }
    return 0;
}
