module goadder

go 1.19
