/* placeholder */ typedef int placeholder_msr_lists;
