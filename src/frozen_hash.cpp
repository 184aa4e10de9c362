// placeholder: implemented in the next commit
#include "shoal/frozen.hpp"
