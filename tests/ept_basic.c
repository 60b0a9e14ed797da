/* placeholder */ typedef int placeholder_ept_basic;
