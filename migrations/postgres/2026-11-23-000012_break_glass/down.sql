DROP TABLE break_glass_grants;
