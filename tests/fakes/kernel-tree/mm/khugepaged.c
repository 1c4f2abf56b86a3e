// SPDX-License-Identifier: GPL-2.0
/* fake mm/khugepaged.c: thpvm's resolve_tree looks for this file */
int khugepaged_fake(void)
{
	return 0;
}
