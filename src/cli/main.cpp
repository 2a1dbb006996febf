#include <cstdio>
int main() { std::puts("lowbit: under construction"); return 0; }
