// libprotobuf-c runtime (Debian: libprotobuf-c-dev); the artifact codec in IR/ builds on it.
#include <protobuf-c/protobuf-c.h>
